"""Every message between master, workers and CLI: one orjson object per ZeroMQ frame.

Worker bus (worker DEALER -> master ROUTER at ``supervision.bus_endpoint``):

| kind    | direction        | fields          | meaning                                     |
|---------|------------------|-----------------|---------------------------------------------|
| ready   | worker -> master | pid             | started; may be given traffic now           |
| hb      | worker -> master |                 | heartbeat, every heartbeat_interval         |
| hb      | master -> worker |                 | the master is alive and its loop turns      |

Control endpoint (CLI DEALER -> master ROUTER at ``control.endpoint``):

| kind    | direction        | fields                         |
|---------|------------------|--------------------------------|
| request | cli -> master    | id, token, cmd, args           |
| reply   | master -> cli    | id, ok, result / error         |
"""

from __future__ import annotations

from typing import Any

import orjson

READY = "ready"
HEARTBEAT = "hb"


class MalformedMessage(ValueError):
    pass


def encode(message: dict[str, Any]) -> bytes:
    return orjson.dumps(message)


def decode(frame: bytes) -> dict[str, Any]:
    try:
        message = orjson.loads(frame)
    except orjson.JSONDecodeError as exc:
        raise MalformedMessage(f"not JSON: {exc}") from None
    if not isinstance(message, dict):
        raise MalformedMessage("not a JSON object")
    return message


def worker_identity(name: str, incarnation: int) -> bytes:
    """Each incarnation gets its own identity, so a replacement and the worker it
    replaces can both be connected while the replacement proves itself."""
    return f"{name}#{incarnation}".encode()
