#!/usr/bin/env bash
# Run every benchmark once; figures go to stdout.
set -euo pipefail
echo "== restart latency (kill -9 -> replacement READY)"
workingagents bench restart --kills "${KILLS:-50}"
echo
echo "== memory per idle worker"
workingagents bench memory --workers "${WORKERS:-8}"
echo
echo "== gateway throughput vs a bare pyzmq ROUTER echo"
workingagents bench gateway
echo
echo "== plugins: the bundled chain vs none, and file-drop-to-live swap latency"
workingagents bench plugins
echo
echo "== audit: calls/s and p99 with fsync never, batch (default) and always"
workingagents bench audit
echo
echo "== AI gateway: vs a fake OpenAI provider straight, plain and streamed"
workingagents bench llm
