"""Record shapes shared by every process that writes to the audit log: a call's error
outcome, and the records the master writes itself (its worker's call records are made by
gateway.call_record)."""

from __future__ import annotations

import time
from typing import Any

import orjson


def error_outcome(code: int, message: str) -> dict[str, Any]:
    return {"status": "error", "code": code, "message": message}


def master_record(kind: str, agent: str, tool: Any, code: int, message: str,
                  **more: Any) -> bytes:
    """A call the master answered itself ("lost": its worker died or never answered;
    "refused": turned away before any worker saw it)."""
    return orjson.dumps({"kind": kind, "t": time.time(), "agent": agent, "tool": tool, **more,
                         "outcome": error_outcome(code, message)})
