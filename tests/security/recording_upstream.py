"""A minimal handshake-era MCP server over stdio that writes down every tools/call it
receives, byte for byte, so that a test can prove what did (or did not) reach it.

usage: recording_upstream.py RECORD_FILE TOOL...   (each tool echoes its arguments back,
prefixed with the tool's name)"""

from __future__ import annotations

import json
import sys

RECORD, TOOLS = sys.argv[1], sys.argv[2:]


def reply(rid, result=None, error=None):
    body = {"jsonrpc": "2.0", "id": rid}
    body.update({"error": error} if error else {"result": result})
    sys.stdout.write(json.dumps(body) + "\n")
    sys.stdout.flush()


for line in sys.stdin:
    msg = json.loads(line)
    method, rid = msg.get("method"), msg.get("id")
    if rid is None:
        continue
    if method == "initialize":
        reply(rid, {"protocolVersion": "2025-06-18", "capabilities": {"tools": {}},
                    "serverInfo": {"name": "recorder", "version": "1"}})
    elif method == "tools/list":
        reply(rid, {"tools": [{"name": t, "description": f"the {t} tool",
                               "inputSchema": {"type": "object"}} for t in TOOLS]})
    elif method == "tools/call":
        with open(RECORD, "a") as f:
            f.write(line.rstrip("\n") + "\n")
        name = msg["params"]["name"]
        if name not in TOOLS:
            reply(rid, error={"code": -32602, "message": f"Unknown tool: {name}"})
            continue
        text = f"{name} {json.dumps(msg['params'].get('arguments'), sort_keys=True)}"
        reply(rid, {"content": [{"type": "text", "text": text}], "isError": False})
    else:
        reply(rid, error={"code": -32601, "message": f"Method not found: {method}"})
