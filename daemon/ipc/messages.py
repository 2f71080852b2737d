"""Every message between master, workers and CLI, and how each socket encodes them.

Worker bus (worker DEALER -> master ROUTER at ``supervision.bus_endpoint``): one
encoding, every frame is a kind byte then a body; the receiver dispatches on that byte.
The control messages are the kind MESSAGE (b"m"), whose body is the msgspec JSON of one
of the frozen Structs below, a union tagged by its "k" field:

| Struct (k)                     | direction          | fields                          |
|--------------------------------|--------------------|---------------------------------|
| Ready (ready)                  | worker -> master   | pid                             |
| Heartbeat (hb)                 | either way         |                                 |
| Config (config)                | master -> gateway  | gateway                         |
| AuditStatus (audit)            | audit -> master    | file, records, fsync, failing,  |
|                                |                    | checkpointed, pending           |
| UpstreamTools (tools)          | upstream -> master | upstream, endpoint, tools,      |
|                                |                    | resources, templates, prompts,  |
|                                |                    | subscribe                       |
| ResourceWatch (watch)          | master -> upstream | version, uris                   |
| ResourceWatched (watched)      | upstream -> master | upstream, version, failed       |
| ResourceUpdated (updated)      | upstream -> master | upstream, uri                   |
| Upstreams (upstreams)          | master -> gateway  | upstreams: {name: {endpoint,    |
|                                |                    | tools, resources, templates,    |
|                                |                    | prompts, state, retry_at}}      |
| PluginPrepare (plugin_prepare) | master -> gateway  | token, name, spec               |
| PluginCommit (plugin_commit)   | master -> gateway  | token, name                     |
| PluginAbort (plugin_abort)     | master -> gateway  | token, name                     |
| PluginUnload (plugin_unload)   | master -> gateway  | token, name                     |
| PluginSnapshot (plugin_snapshot) | master -> gateway | token                          |
| PluginReply (plugin_reply)     | gateway -> master  | token, ok, error, plugins       |
| PluginState (plugin_state)     | gateway -> master  | plugins: {name: {version, state}} |

Ready: started, may be given traffic now.  Heartbeat: every heartbeat_interval, from
each worker and from the master (its loop turns).  Config: new gateway settings after a
reload.  AuditStatus: the audit log's state, once a second.  UpstreamTools: its server's
tools, resources, resource templates and prompts (each as the server listed it), before
READY, and again whenever the server says a list changed; ``subscribe``: it offers
resource subscriptions.  ResourceWatch: every URI of that upstream some agent is
subscribed to (the whole set, so a restarted worker gets it again as it is); the worker
subscribes and unsubscribes upstream to match, then answers ResourceWatched (the URIs
the server refused, with why).  ResourceUpdated: the server said that resource changed.
Upstreams: every upstream's state.  The plugin steps make the
master's all-or-nothing swap: prepare loads a version and dry-runs its migration, commit
migrates for real and swaps, abort drops what was prepared, unload removes the plugin
from the chain, snapshot asks for every plugin's state; each is answered by a
PluginReply with its token (and the states, for a snapshot).  PluginState is the
periodic snapshot a restarted worker resumes from.

Free-form JSON (plugin specs and states, tool lists, gateway options) stays dicts and
lists inside the Structs.  Heartbeats go out every second from every process: they are
one pre-encoded frame, HEARTBEAT_FRAME, and recognised by comparing bytes.

Data path (same sockets, binary envelopes, so the master never re-encodes a call):

| first byte | direction        | layout                        | meaning                    |
|------------|------------------|-------------------------------|----------------------------|
| c          | master -> worker | c, seq u64, len u8, agent,    | one agent request, with    |
|            |                  | len u32, tool, raw            | the tool tools/call names  |
| l          | master -> worker | l, seq u64, len u8, agent,    | one AI gateway request:    |
|            |                  | len u32, method, headers JSON,| "llm/chat", headers passed |
|            |                  | LF, body                      | on, its HTTP body          |
| A          | master -> worker | A, seq u64, len u8, agent,    | one agent gateway request: |
|            |                  | len u32, method, version LF   | "a2a/<peer>", the caller's |
|            |                  | body                          | A2A-Version, its body      |
| x          | master -> worker | x, seq u64                    | cancel that request        |
| w          | master -> worker | w, seq u64, bytes u32         | the agent took this many   |
|            |                  |                               | bytes of that stream (its  |
|            |                  |                               | credit: gateway.           |
|            |                  |                               | stream_credit)             |
| s          | worker -> master | s, seq u64                    | a tool starts on this call |
| r          | worker -> master | r, seq u64, raw               | the JSON-RPC response      |
| p          | worker -> master | p, seq u64, raw               | progress notification (or  |
|            |                  |                               | an upstream's log message) |
| Q          | worker -> master | Q, seq u64, ask u64, message  | an upstream asks the agent |
| R          | master -> worker | R, seq u64, ask u64, answer   | the agent's answer to it   |
| B          | either way       | B, (len u32, envelope)...     | envelopes of one loop turn |
| m          | either way       | m, msgspec JSON of a Struct   | a control message (above)  |

An AI gateway request (l), and an agent gateway request (A), is answered in LLM frames
(below; they carry any HTTP answer): p envelopes for a stream's
head and chunks, then one r envelope that ends it; a master-made answer (the worker died,
a timeout) is a JSON-RPC error instead, which starts with "{".

| LLM frame (first byte)  | in      | layout                   | meaning                    |
|-------------------------|---------|--------------------------|----------------------------|
| h                       | p       | h, head JSON             | a stream starts: status,   |
|                         |         |                          | headers                    |
| d                       | p       | d, bytes                 | stream bytes (SSE events)  |
| e                       | r       | e, head JSON, LF, body   | the whole response         |
| z                       | r       | z, bytes                 | a stream's last bytes      |

A tool name's len is NO_TOOL when there is none (tools/list, or a name that is not a
string): the worker answers from the request, which it parses in full.

Upstream calls (gateway worker DEALER -> an upstream worker's ROUTER; same x and p):

| first byte | direction        | layout                        | meaning                    |
|------------|------------------|-------------------------------|----------------------------|
| u          | gateway -> upstr | u, seq u64, progress u8,      | call tool with arguments   |
|            |                  | len u32, tool, arguments      | (a JSON object, as bytes)  |
| q          | gateway -> upstr | q, seq u64, len u32, method,  | any other request (read a  |
|            |                  | params                        | resource, get a prompt...) |
| r          | upstr -> gateway | r, seq u64, result            | the server's result bytes  |
| f          | upstr -> gateway | f, seq u64, {code, message,   | the call failed            |
|            |                  | data?}                        |                            |

| Q          | upstr -> gateway | Q, seq u64, ask u64, message  | the server asks the client |
| R          | gateway -> upstr | R, seq u64, ask u64, answer   | the agent's answer         |
| N          | upstr -> gateway | N, seq u64, notification      | the server's log message   |

Server-to-client requests during a call (sampling, elicitation, roots/list...): Q's
message is ``{"method", "params"}`` (no id: each hop numbers it, ``ask``, and keeps the
way back), R's answer ``{"result"}`` or ``{"error"}``; ``seq`` is the call's at that hop
(the upstream call's between gateway and upstream worker, the master's call otherwise).
Each hop forgets an ask when its call ends, and the upstream worker then answers the
server's request with an error.  N carries a ``notifications/message`` the server sent
during the call, whole; the gateway passes it to the master as a p envelope.

A q request's params (a JSON object, as bytes) go to the server as they are, but for
the era's ``_meta`` its client adds; its result comes back as the server's bytes.

Audit (gateway workers' and the master's DEALER -> the audit process's ROUTER):

| first byte | direction        | layout                        | meaning                    |
|------------|------------------|-------------------------------|----------------------------|
| a          | link -> audit    | a, id u64, record             | a record to append         |
| k          | audit -> link    | k, first u64, last u64        | ids first..last written    |
| n          | audit -> link    | n, first u64, last u64, reason| not written (disk full...) |

Batching matters: each ZeroMQ send wakes libzmq's I/O thread, so envelopes bound for
the same peer within one turn of the event loop travel as one frame.

Control endpoint (CLI DEALER -> master ROUTER at ``control.endpoint``): a socket of its
own with its own single encoding, one JSON object per frame (``encode``/``decode``), so
that a client in any language can speak it with a JSON library:

| kind    | direction        | fields                         |
|---------|------------------|--------------------------------|
| request | cli -> master    | id, token, cmd, args           |
| reply   | master -> cli    | id, ok, result / error         |
"""

from __future__ import annotations

import struct
from typing import Any

import msgspec
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
RESOURCE_WATCH = "watch"
RESOURCE_WATCHED = "watched"
RESOURCE_UPDATED = "updated"

CALL = b"c"
UPSTREAM_CALL = b"u"
UPSTREAM_REQUEST = b"q"
FAILED = b"f"
CANCEL = b"x"
CREDIT = b"w"
LLM_CALL = b"l"
A2A_CALL = b"A"
LLM_HEAD = b"h"
LLM_DATA = b"d"
LLM_WHOLE = b"e"
LLM_END = b"z"
REPLY = b"r"
PROGRESS = b"p"
STARTED = b"s"
ASK = b"Q"
ANSWER = b"R"
NOTE = b"N"
BATCH = b"B"
MESSAGE = b"m"
RECORD = b"a"
ACK = b"k"
NACK = b"n"
_SEQ = struct.Struct("!Q")
_LEN = struct.Struct("!I")
_SEQ_LEN = struct.Struct("!QBI")
NO_TOOL = 0xFFFFFFFF
_RANGE = struct.Struct("!QQ")
_CREDIT = struct.Struct("!QI")
# A stream's credit window (gateway.stream_credit): the bytes a worker may have sent that
# the agent has not taken yet, and the step in which the master gives them back
CREDIT_WINDOW = 256 << 10
CREDIT_EVERY = CREDIT_WINDOW // 4


class MalformedMessage(ValueError):
    pass


class Message(msgspec.Struct, frozen=True, tag_field="k", omit_defaults=True):
    """A control message on the worker bus; its tag, "k", names the kind."""


class Ready(Message, frozen=True, tag=READY):
    pid: int


class Heartbeat(Message, frozen=True, tag=HEARTBEAT):
    pass


class Config(Message, frozen=True, tag=CONFIG):
    gateway: dict[str, Any]


class AuditStatus(Message, frozen=True, tag=AUDIT_STATUS):
    file: str
    records: int
    fsync: str
    failing: str | None
    checkpointed: int
    pending: int


class UpstreamTools(Message, frozen=True, tag=UPSTREAM_TOOLS):
    upstream: str
    endpoint: str
    tools: list[Any]
    resources: list[Any] = msgspec.field(default_factory=list)
    templates: list[Any] = msgspec.field(default_factory=list)  # resource templates
    prompts: list[Any] = msgspec.field(default_factory=list)
    subscribe: bool = False  # it offers resource subscriptions


class ResourceWatch(Message, frozen=True, tag=RESOURCE_WATCH):
    version: int  # per upstream, rising: the answer names the set it applied
    uris: list[str]


class ResourceWatched(Message, frozen=True, tag=RESOURCE_WATCHED):
    upstream: str
    version: int
    failed: dict[str, str] = msgspec.field(default_factory=dict)  # uri -> why


class ResourceUpdated(Message, frozen=True, tag=RESOURCE_UPDATED):
    upstream: str
    uri: str


class Upstreams(Message, frozen=True, tag=UPSTREAMS):
    upstreams: dict[str, dict[str, Any]]


class PluginPrepare(Message, frozen=True, tag=PLUGIN_PREPARE):
    token: int
    name: str
    spec: dict[str, Any]


class PluginCommit(Message, frozen=True, tag=PLUGIN_COMMIT):
    token: int
    name: str


class PluginAbort(Message, frozen=True, tag=PLUGIN_ABORT):
    token: int
    name: str


class PluginUnload(Message, frozen=True, tag=PLUGIN_UNLOAD):
    token: int
    name: str


class PluginSnapshot(Message, frozen=True, tag=PLUGIN_SNAPSHOT):
    token: int


class PluginReply(Message, frozen=True, tag=PLUGIN_REPLY):
    token: int
    ok: bool
    error: str | None = None
    plugins: dict[str, Any] | None = None  # PLUGIN_SNAPSHOT's answer


class PluginState(Message, frozen=True, tag=PLUGIN_STATE):
    plugins: dict[str, Any]


AnyMessage = (Ready | Heartbeat | Config | AuditStatus | UpstreamTools | Upstreams
              | ResourceWatch | ResourceWatched | ResourceUpdated
              | PluginPrepare | PluginCommit | PluginAbort | PluginUnload | PluginSnapshot
              | PluginReply | PluginState)
PluginStep = PluginPrepare | PluginCommit | PluginAbort | PluginUnload | PluginSnapshot

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(AnyMessage)


def pack_message(message: Message) -> bytes:
    """A MESSAGE envelope: the kind byte, then the Struct as JSON."""
    return MESSAGE + _encoder.encode(message)


def unpack_message(payload: bytes) -> AnyMessage:
    """The Struct a MESSAGE envelope carries; MalformedMessage if it is not one."""
    try:
        message: AnyMessage = _decoder.decode(memoryview(payload)[1:])
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise MalformedMessage(str(exc)) from None
    return message


HEARTBEAT_FRAME = pack_message(Heartbeat())


def encode(message: dict[str, Any]) -> bytes:
    """The control endpoint's encoding (not the worker bus's)."""
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


def pack_call(seq: int, agent: str, tool: str | None, raw: bytes, kind: bytes = CALL) -> bytes:
    """A CALL envelope (or LLM_CALL: ``tool`` is then the method, e.g. "llm/chat")."""
    name = agent.encode()
    named = b"" if tool is None else tool.encode()
    return b"".join((kind, _SEQ.pack(seq), bytes((len(name),)), name,
                     _LEN.pack(NO_TOOL if tool is None else len(named)), named, raw))


def unpack_call(payload: bytes) -> tuple[int, str, str | None, bytes]:
    """(seq, agent, tool, raw) of a CALL (or LLM_CALL) envelope."""
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


def pack_upstream_request(seq: int, method: str, params: bytes) -> bytes:
    name = method.encode()
    return UPSTREAM_REQUEST + _SEQ.pack(seq) + _LEN.pack(len(name)) + name + params


def unpack_upstream_request(payload: bytes) -> tuple[int, str, bytes]:
    """(seq, method, params) of an UPSTREAM_REQUEST envelope."""
    (seq,) = _SEQ.unpack_from(payload, 1)
    (size,) = _LEN.unpack_from(payload, 9)
    return seq, payload[13:13 + size].decode(), payload[13 + size:]


def pack_seq(kind: bytes, seq: int, rest: bytes = b"") -> bytes:
    return kind + _SEQ.pack(seq) + rest


def pack_ask(kind: bytes, seq: int, ask: int, body: bytes) -> bytes:
    """An ASK (``body``: {method, params}) or an ANSWER (``body``: {result} or {error})."""
    return kind + _RANGE.pack(seq, ask) + body


def unpack_ask(payload: bytes) -> tuple[int, int, bytes]:
    """(seq, ask, body) of an ASK or ANSWER envelope."""
    seq, ask = _RANGE.unpack_from(payload, 1)
    return seq, ask, payload[17:]


def pack_range(kind: bytes, first: int, last: int, rest: bytes = b"") -> bytes:
    return kind + _SEQ.pack(first) + _SEQ.pack(last) + rest


def unpack_range(payload: bytes) -> tuple[int, int, bytes]:
    first, last = _RANGE.unpack_from(payload, 1)
    return first, last, payload[17:]


def pack_cancel(seq: int) -> bytes:
    return CANCEL + _SEQ.pack(seq)


def pack_credit(seq: int, taken: int) -> bytes:
    return CREDIT + _CREDIT.pack(seq, taken)


def unpack_credit(payload: bytes) -> tuple[int, int]:
    """(seq, bytes taken) of a CREDIT envelope."""
    seq, taken = _CREDIT.unpack_from(payload, 1)
    return int(seq), int(taken)


def pack_reply(seq: int, raw: bytes) -> bytes:
    return REPLY + _SEQ.pack(seq) + raw


def pack_failed(seq: int, code: int, message: str, data: Any = None) -> bytes:
    error: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        error["data"] = data
    return FAILED + _SEQ.pack(seq) + orjson.dumps(error)


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


def pack_llm_head(status: int, headers: dict[str, str], body: bytes | None = None) -> bytes:
    """An LLM response's head: alone (LLM_HEAD, a stream starts), or with its whole body
    (LLM_WHOLE)."""
    head = orjson.dumps({"status": status, "headers": headers})
    if body is None:
        return LLM_HEAD + head
    return LLM_WHOLE + head + b"\n" + body


def unpack_llm_head(frame: bytes) -> tuple[int, dict[str, str], bytes]:
    """(status, headers, body) of an LLM_HEAD or LLM_WHOLE frame."""
    head, _, body = frame[1:].partition(b"\n")
    parsed = orjson.loads(head)
    return int(parsed["status"]), dict(parsed["headers"]), body


def pack_llm_request(headers: dict[str, str], body: bytes) -> bytes:
    """An LLM_CALL's raw part: the client headers passed on to the provider, then the body
    untouched."""
    if not headers:  # the usual case (only Anthropic's clients pass any)
        return b"{}\n" + body
    return orjson.dumps(headers) + b"\n" + body


def unpack_llm_request(raw: bytes) -> tuple[dict[str, str], bytes]:
    head, _, body = raw.partition(b"\n")
    headers = orjson.loads(head)
    return {str(k): str(v) for k, v in headers.items()}, body
