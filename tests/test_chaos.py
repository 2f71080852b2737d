"""The chaos harness as a test: 25 s of faults under pipelined load on every front door:
MCP over TCP, ZeroMQ, the bridge and HTTP, and LLM and A2A requests on the HTTP port, while
the LLM provider and the A2A peer are killed and restarted too.

The harness (benchmarks/chaos.py) starts and stops its own daemon; this test only reads
its verdict.  The whole run takes under a minute on the 2-core VM.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_under_chaos_every_call_gets_one_correct_audited_answer_and_99_percent_succeed():
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "chaos.py"),
                          "--duration", "25", "--json"],
                         capture_output=True, text=True, timeout=240, cwd=ROOT)
    lines = run.stdout.strip().splitlines()
    assert lines, f"the harness printed nothing (exit {run.returncode}):\n{run.stderr}"
    summary = json.loads(lines[-1])
    failed = [name for name, ok in summary["checks"].items() if not ok]
    assert not failed, f"failed checks {failed}; summary: {json.dumps(summary, indent=1)}"
    assert summary["good"]["ok_percent"] >= 99.0
    assert summary["gateways"]["requests"] > 0 and summary["by_door"]["http"]["requests"] > 0
    assert run.returncode == 0, run.stderr
