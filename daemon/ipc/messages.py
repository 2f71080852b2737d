"""Every message between master, workers and CLI: one orjson object per ZeroMQ frame.

Worker bus (worker DEALER -> master ROUTER at ``supervision.bus_endpoint``):

| kind    | direction        | fields          | meaning                                     |
|---------|------------------|-----------------|---------------------------------------------|
| ready   | worker -> master | pid             | started; may be given traffic now           |
| hb      | worker -> master |                 | heartbeat, every heartbeat_interval         |
| hb      | master -> worker |                 | the master is alive and its loop turns      |
| config  | master -> worker | gateway         | new gateway settings after a reload         |
| audit   | audit -> master  | file, records.. | the audit log's state, once a second        |
| tools   | upstream -> master | upstream, endpoint, tools | its server's tools, before READY |
| upstreams | master -> gateway | upstreams: {name: state, tools} | every upstream's state  |
| plugin_prepare | master -> gateway | token, name, spec | load a version, dry-run migrate  |
| plugin_commit  | master -> gateway | token, name       | migrate for real and swap        |
| plugin_abort   | master -> gateway | token, name       | drop what was prepared           |
| plugin_unload  | master -> gateway | token, name       | remove the plugin from the chain |
| plugin_snapshot| master -> gateway | token             | reply with every plugin's state  |
| plugin_reply   | gateway -> master | token, ok, error (plugins) | how a step went         |
| plugin_state   | gateway -> master | plugins: {name: {version, state}} | periodic snapshot |

Data path (same sockets, binary envelopes, so the master never re-encodes a call):

| first byte | direction        | layout                        | meaning                    |
|------------|------------------|-------------------------------|----------------------------|
| c          | master -> worker | c, seq u64, len u8, agent,    | one agent request, with    |
|            |                  | len u32, tool, raw            | the tool tools/call names  |
| x          | master -> worker | x, seq u64                    | cancel that request        |
| s          | worker -> master | s, seq u64                    | a tool starts on this call |
| r          | worker -> master | r, seq u64, raw               | the JSON-RPC response      |
| p          | worker -> master | p, seq u64, raw               | progress notification      |
| B          | either way       | B, (len u32, envelope)...     | envelopes of one loop turn |

A tool name's len is NO_TOOL when there is none (tools/list, or a name that is not a
string): the worker answers from the request, which it parses in full.

Upstream calls (gateway worker DEALER -> an upstream worker's ROUTER; same x and p):

| first byte | direction        | layout                        | meaning                    |
|------------|------------------|-------------------------------|----------------------------|
| u          | gateway -> upstr | u, seq u64, progress u8,      | call tool with arguments   |
|            |                  | len u32, tool, arguments      | (a JSON object, as bytes)  |
| r          | upstr -> gateway | r, seq u64, result            | the server's result bytes  |
| f          | upstr -> gateway | f, seq u64, {code, message}   | the call failed            |

Audit (gateway workers' and the master's DEALER -> the audit process's ROUTER):

| first byte | direction        | layout                        | meaning                    |
|------------|------------------|-------------------------------|----------------------------|
| a          | link -> audit    | a, id u64, record             | a record to append         |
| k          | audit -> link    | k, first u64, last u64        | ids first..last written    |
| n          | audit -> link    | n, first u64, last u64, reason| not written (disk full...) |

Batching matters: each ZeroMQ send wakes libzmq's I/O thread, so envelopes bound for
the same peer within one turn of the event loop travel as one frame.

Control endpoint (CLI DEALER -> master ROUTER at ``control.endpoint``):

| kind    | direction        | fields                         |
|---------|------------------|--------------------------------|
| request | cli -> master    | id, token, cmd, args           |
| reply   | master -> cli    | id, ok, result / error         |
"""

from __future__ import annotations

import struct
from typing import Any

import orjson

READY = "ready"
HEARTBEAT = "hb"
CONFIG = "config"
AUDIT_STATUS = "audit"
UPSTREAM_TOOLS = "tools"
UPSTREAMS = "upstreams"
PLUGIN_PREPARE = "plugin_prepare"
PLUGIN_COMMIT = "plugin_commit"
PLUGIN_ABORT = "plugin_abort"
PLUGIN_UNLOAD = "plugin_unload"
PLUGIN_SNAPSHOT = "plugin_snapshot"
PLUGIN_REPLY = "plugin_reply"
PLUGIN_STATE = "plugin_state"

CALL = b"c"
UPSTREAM_CALL = b"u"
FAILED = b"f"
CANCEL = b"x"
REPLY = b"r"
PROGRESS = b"p"
STARTED = b"s"
BATCH = b"B"
RECORD = b"a"
ACK = b"k"
NACK = b"n"
_SEQ = struct.Struct("!Q")
_LEN = struct.Struct("!I")
_SEQ_LEN = struct.Struct("!QBI")
NO_TOOL = 0xFFFFFFFF
_RANGE = struct.Struct("!QQ")


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


def is_data(payload: bytes) -> bool:
    """Data-path envelopes start with a letter; control messages are JSON objects."""
    return payload[:1] != b"{"


def pack_call(seq: int, agent: str, tool: str | None, raw: bytes) -> bytes:
    name = agent.encode()
    named = b"" if tool is None else tool.encode()
    return b"".join((CALL, _SEQ.pack(seq), bytes((len(name),)), name,
                     _LEN.pack(NO_TOOL if tool is None else len(named)), named, raw))


def unpack_call(payload: bytes) -> tuple[int, str, str | None, bytes]:
    """(seq, agent, tool, raw) of a CALL envelope."""
    (seq,) = _SEQ.unpack_from(payload, 1)
    at = 10 + payload[9]
    agent = payload[10:at].decode()
    (size,) = _LEN.unpack_from(payload, at)
    if size == NO_TOOL:
        return seq, agent, None, payload[at + 4:]
    return seq, agent, payload[at + 4:at + 4 + size].decode(), payload[at + 4 + size:]


def pack_upstream_call(seq: int, tool: str, progress: bool, arguments: bytes) -> bytes:
    name = tool.encode()
    return UPSTREAM_CALL + _SEQ_LEN.pack(seq, progress, len(name)) + name + arguments


def unpack_upstream_call(payload: bytes) -> tuple[int, str, bool, bytes]:
    """(seq, tool, progress wanted, arguments) of an UPSTREAM_CALL envelope."""
    seq, progress, size = _SEQ_LEN.unpack_from(payload, 1)
    at = 1 + _SEQ_LEN.size
    return seq, payload[at:at + size].decode(), bool(progress), payload[at + size:]


def pack_seq(kind: bytes, seq: int, rest: bytes = b"") -> bytes:
    return kind + _SEQ.pack(seq) + rest


def pack_range(kind: bytes, first: int, last: int, rest: bytes = b"") -> bytes:
    return kind + _SEQ.pack(first) + _SEQ.pack(last) + rest


def unpack_range(payload: bytes) -> tuple[int, int, bytes]:
    first, last = _RANGE.unpack_from(payload, 1)
    return first, last, payload[17:]


def pack_cancel(seq: int) -> bytes:
    return CANCEL + _SEQ.pack(seq)


def pack_reply(seq: int, raw: bytes) -> bytes:
    return REPLY + _SEQ.pack(seq) + raw


def pack_failed(seq: int, code: int, message: str) -> bytes:
    return FAILED + _SEQ.pack(seq) + orjson.dumps({"code": code, "message": message})


def unpack_seq(payload: bytes) -> tuple[int, bytes]:
    """(seq, rest) of a reply or cancel envelope."""
    return _SEQ.unpack_from(payload, 1)[0], payload[9:]


def pack_batch(envelopes: list[bytes]) -> bytes:
    pack = _LEN.pack
    return BATCH + b"".join(pack(len(e)) + e for e in envelopes)


def envelopes(payload: bytes) -> list[bytes]:
    """The envelopes a data-path frame carries: one, or a batch."""
    if payload[:1] != BATCH:
        return [payload]
    out, at, end = [], 1, len(payload)
    unpack = _LEN.unpack_from
    while at < end:
        (size,) = unpack(payload, at)
        out.append(payload[at + 4:at + 4 + size])
        at += 4 + size
    return out


def pack_progress(seq: int, raw: bytes) -> bytes:
    return PROGRESS + _SEQ.pack(seq) + raw


def pack_started(seq: int) -> bytes:
    return STARTED + _SEQ.pack(seq)
