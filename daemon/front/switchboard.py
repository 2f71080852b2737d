"""The master's side of every agent call: authenticate, route, and answer exactly once.

Per message the master does only what routing needs: decode the head of a request for a
gateway worker (tools/*, resources/*, prompts/*, completion/complete; protocol.
request_head: its arguments stay bytes), find the agent, pick its gateway worker
(sharded by agent name, so per-agent state lives in one worker), and forward the raw
bytes with the tool's name (a prompt's, a resource's URI); the worker parses the request
in full, once.  Messages the master answers itself (the handshake methods that need no
policy: initialize, ping, server/discover; subscriptions/listen, see front.listen;
resources/subscribe and unsubscribe, see front.resource_subs; notifications; errors)
it parses in full, and refuses a key given twice before it acts on one.  Responses come
back as raw bytes and go to the agent without being decoded.

Fate of a call: a call waits in the master while its worker is not READY and goes out
when it is.  If its worker dies, a call on which a tool had started gets -32014 (its
outcome is unknown); the call whose own code hung or crashed the worker gets -32018 and
is never handed to the replacement (it would do the same there); any other is re-routed
to the replacement.  A call never waits longer than its timeout.  An agent whose calls
keep doing that is quarantined (front.quarantine): its calls answer -32019.
"""

from __future__ import annotations

import itertools
import logging
import math
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from daemon import metrics
from daemon.audit.link import AuditLink
from daemon.audit.records import master_record
from daemon.config import Settings
from daemon.front import listen, resource_subs
from daemon.front.agent_requests import AgentRequests
from daemon.front.auth import Agent, Authenticator, ensure_admin_token
from daemon.front.quarantine import Quarantine, QuarantineLimits
from daemon.front.resource_subs import ResourceWatchers
from daemon.ipc import messages
from daemon.ipc.bus import WorkerBus
from daemon.protocol import jsonrpc, mcp, request_head
from daemon.protocol.duplicate_keys import duplicate_key, duplicate_message
from daemon.protocol.jsonrpc import RpcError
from daemon.protocol.request_head import CALL_METHODS, GATEWAY_METHODS, routed_name
from daemon.supervision.worker_child import WorkerChild

log = logging.getLogger("gateway")
_ANSWERED = object()  # what _parse_in_full returns for a message it has answered


class Connection:
    """One agent connection (a TCP socket, or a ZeroMQ peer identity)."""

    _keys = itertools.count(1)

    def __init__(self, send: Callable[[bytes], None], close: Callable[[], None],
                 transport: str, progress: Callable[[bytes], None] | None = None) -> None:
        self.key = next(Connection._keys)
        self.send = send
        # what a call streams before its answer (progress notifications, LLM chunks);
        # a stream transport (TCP, ZeroMQ) sends it like any message
        self.progress = progress or send
        self.close = close
        self.transport = transport
        self.agent: Agent | None = None  # set by a handshake-era initialize
        self.curve_key: str | None = None  # a Curve peer's key (Z85), vetted at the handshake
        self.curve_initialized = False  # initialize on the key alone (no token)
        self.inflight: dict[jsonrpc.RequestId, int] = {}  # request id -> call seq
        self.listens: listen.Streams = {}  # its subscriptions/listen streams
        # whose resource subscriptions its requests make (an HTTP request in a session
        # subscribes for its session, whose stream hears the updates), and whose
        # responses count for what an upstream asks on it (front.agent_requests)
        self.home = self
        # it gets handshake-era notifications once its agent is known (an HTTP request
        # that is not a session does not: its only messages are its own stream's)
        self.hears_broadcasts = True
        self.last_active = time.monotonic()
        # what it declared at initialize: None takes no server-to-client requests
        self.capabilities: dict[str, Any] | None = None


@dataclass
class RoutedCall:
    """The master's record of one call in flight, from the agent's line to its answer."""

    conn: Connection
    rid: jsonrpc.RequestId
    agent: str
    tool: str | None  # what tools/call named (for the master's own audit records)
    worker: WorkerChild
    payload: bytes  # the envelope, ready to (re)send
    deadline: float
    identity: bytes | None = None  # the incarnation it was handed to; None: waiting
    reached_tool: bool = False  # the worker said a tool started on it (see STARTED)
    overran: bool = False  # a hook overran on it: the worker is interrupting it


@dataclass
class Limits:
    max_inflight_per_connection: int
    max_inflight_per_worker: int
    call_timeout: float
    tool_timeouts: dict[str, float] = field(default_factory=dict)
    idle_timeout: float = 300.0  # a connection silent this long is closed (sweep_idle)
    llm_timeout: float = 600.0  # an AI gateway request, stream included ([llm])
    a2a_timeout: float = 300.0  # an agent gateway request, stream included ([a2a])
    llm_per_agent: int = 64  # AI gateway requests in flight per agent ([llm]; 0: no cap)

    @classmethod
    def from_settings(cls, settings: Settings) -> Limits:
        listen, gateway = settings.config.listen, settings.config.gateway
        return cls(listen.max_inflight_per_connection, listen.max_inflight_per_worker,
                   gateway.call_timeout, dict(gateway.tool_timeouts), listen.idle_timeout,
                   settings.config.llm.request_timeout, settings.config.a2a.request_timeout,
                   settings.config.llm.max_concurrent_per_agent)


class Switchboard:
    def __init__(self, bus: WorkerBus, workers: Callable[[], list[WorkerChild]],
                 auth: Authenticator, limits: Limits, audit: AuditLink | None = None,
                 quarantine: Quarantine | None = None) -> None:
        self.bus = bus
        self.quarantine = quarantine or Quarantine(QuarantineLimits())
        self.audit = audit
        self.workers = workers
        self.auth = auth
        self.limits = limits
        self.connections: dict[int, Connection] = {}
        self.calls: dict[int, RoutedCall] = {}
        self._seq = itertools.count(1)
        self._per_worker: dict[str, int] = {}
        self.requests = AgentRequests(bus.send_raw)  # upstreams' requests put to agents
        self.resources: ResourceWatchers | None = None  # set once the upstreams are known
        bus.on_data(self.on_worker_payload)

    def apply(self, settings: Settings) -> list[str]:
        """A reload: the agents and limits that calls arriving from now on meet."""
        auth = Authenticator(settings, ensure_admin_token(settings.state_dir))
        limits = Limits.from_settings(settings)
        quarantine = QuarantineLimits.from_settings(settings)
        if auth.admits_the_same(self.auth) and limits == self.limits \
                and quarantine == self.quarantine.limits:
            return []
        self.auth, self.limits, self.quarantine.limits = auth, limits, quarantine
        return ["agents, roles and gateway limits"]

    # -- connections ------------------------------------------------------------------

    def attach(self, conn: Connection) -> None:
        self.connections[conn.key] = conn

    def detach(self, conn: Connection) -> None:
        """The agent went away: its calls are cancelled; their results are dropped."""
        self.connections.pop(conn.key, None)
        if self.resources is not None:
            self.resources.drop_connection(conn.key)
        for seq in list(conn.inflight.values()):
            self._cancel(seq)
        conn.inflight.clear()

    def credit(self, conn: Connection, taken: int) -> None:
        """The agent took ``taken`` bytes of its stream: its worker may send that much
        more (gateway.stream_credit)."""
        for seq in conn.inflight.values():
            call = self.calls.get(seq)
            if call is not None and call.identity is not None:
                self.bus.send_raw(call.identity, messages.pack_credit(seq, taken))

    def _cancel(self, seq: int) -> None:
        """Forget a call and tell its worker, which cancels the tool (no response)."""
        call = self.calls.pop(seq, None)
        if call is not None:
            self._release(call)
            if self.requests.pending:
                self.requests.call_over(seq)
            if call.identity is not None:
                self.bus.send_raw(call.identity, messages.pack_cancel(seq))

    # -- agent -> gateway -------------------------------------------------------------

    def on_message(self, conn: Connection, raw: bytes) -> None:
        conn.last_active = time.monotonic()
        head = request_head.decode(raw)  # a tools/* request's routing fields, and no more
        if head is None:
            self._on_parsed(conn, raw)
            return
        rid, meta = head.id, head.params.meta
        assert rid is not None  # a head has one
        try:
            mcp.request_version(meta)  # raises for a version this gateway does not speak
            self._route(conn, rid, self._agent(conn, meta), head.method, head.tool, raw)
        except RpcError as exc:  # the master answers it: so it parses it in full first
            if self._parse_in_full(conn, raw) is not _ANSWERED:
                self._answer_refusal(conn, rid, exc)

    def _on_parsed(self, conn: Connection, raw: bytes) -> None:
        """Every message that is not a plain tools/* request: parsed in full, here."""
        message = self._parse_in_full(conn, raw)
        if message is _ANSWERED:
            return
        rid = message.get("id") if type(message) is dict else None
        try:
            self._dispatch(conn, message, raw)
        except RpcError as exc:  # notifications never raise, so this always has a reader
            self._answer_refusal(conn, rid, exc)

    @staticmethod
    def _parse_in_full(conn: Connection, raw: bytes) -> Any:
        """The message, or _ANSWERED if it is not JSON or gives a key twice in one object
        (which one counts would depend on the reader: refused)."""
        try:
            message = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            conn.send(jsonrpc.error(None, jsonrpc.PARSE_ERROR, f"Parse error: {exc}"))
            return _ANSWERED
        twice = duplicate_key(raw, message)
        if twice is None:
            return message
        if type(message) is not dict or "id" in message:  # a notification: no answer
            rid = message.get("id") if type(message) is dict else None
            conn.send(jsonrpc.error(rid if jsonrpc.valid_id(rid) and twice != "id" else None,
                                    jsonrpc.INVALID_REQUEST, duplicate_message(twice)))
        return _ANSWERED

    def record_refusal(self, error: RpcError, **more: Any) -> None:
        """The audit record of a request turned away before any worker saw it."""
        if isinstance(error, Refused) and self.audit is not None:
            self.audit.submit(master_record("refused", error.agent, error.tool, error.code,
                                            error.message, **more))

    def _answer_refusal(self, conn: Connection, rid: Any, error: RpcError) -> None:
        if error.code == jsonrpc.UNAUTHENTICATED:  # counted, not audited: floods are cheap
            metrics.unauthenticated(conn.transport)
        self.record_refusal(error)
        conn.send(jsonrpc.error(rid if jsonrpc.valid_id(rid) else None, error.code,
                                error.message, error.data))

    def _dispatch(self, conn: Connection, message: Any, raw: bytes) -> None:
        if type(message) is not dict or message.get("jsonrpc") != "2.0":
            raise RpcError(jsonrpc.INVALID_REQUEST, "Invalid Request: not a JSON-RPC 2.0 "
                                                    "object")
        method = message.get("method")
        if "id" not in message:
            if isinstance(method, str):
                self._notification(conn, method, message.get("params"))
                return  # notifications get no response, whatever they say
            return  # a response without an id: nothing to match it with
        rid = message["id"]
        if not isinstance(method, str) or not jsonrpc.valid_id(rid):
            if "result" in message or "error" in message:
                self.requests.answered(conn, message)  # to what an upstream asked
                return
            raise RpcError(jsonrpc.INVALID_REQUEST, "Invalid Request: needs a string or "
                                                    "integer id and a string method")
        params = message.get("params", {})
        if not isinstance(params, dict):
            raise RpcError(jsonrpc.INVALID_PARAMS, "Invalid params: params must be an object")
        meta = params.get("_meta")
        if meta is not None and not isinstance(meta, dict):
            raise RpcError(jsonrpc.INVALID_PARAMS, "Invalid params: _meta must be an object")
        if method == "initialize":
            conn.send(jsonrpc.result(rid, self._initialize(conn, params)))
            return
        stateless = mcp.request_version(meta) is not None
        if method == "server/discover":
            conn.send(jsonrpc.result(rid, mcp.discover_result()))
        elif method == "ping":
            conn.send(jsonrpc.result(rid, mcp.finish({}, stateless)))
        elif method in GATEWAY_METHODS:  # not a head (a field of an unexpected type)
            agent = self._agent(conn, meta)
            self._route(conn, rid, agent, method,
                        routed_name(method, params.get("name"), params.get("uri")), raw)
        elif method == "subscriptions/listen":
            self._listen(conn, self._agent(conn, meta), rid, params)
        elif method in resource_subs.METHODS:
            self._subscribe(conn, self._agent(conn, meta), rid, method, params)
        else:
            raise RpcError(jsonrpc.METHOD_NOT_FOUND, f"Method not found: {method}")

    def _listen(self, conn: Connection, agent: Agent, rid: jsonrpc.RequestId,
                params: dict[str, Any]) -> None:
        if rid in conn.inflight:
            raise RpcError(jsonrpc.INVALID_REQUEST, f"Invalid Request: id {rid!r} is "
                                                    "already in flight on this connection")
        wanted = params.get("notifications")
        uris = wanted.get("resourceSubscriptions") if isinstance(wanted, dict) else None
        found = {} if self.resources is None or uris is None else \
            self.resources.resolve_all(agent, uris, self.auth.may_read)
        lists = listen.open_stream(conn.listens, rid, params,
                                   self.limits.max_inflight_per_connection)

        def acknowledge(failed: dict[str, str]) -> None:
            # a listen stream's frames come before its answer (which only a graceful end
            # would send): on HTTP, SSE events of that request's stream
            conn.progress(listen.acknowledgement(rid, lists, sorted(set(found) - set(failed))
                                                 if uris is not None else None))
        if self.resources is None or not found:
            acknowledge({})
        else:
            self.resources.add((conn.key, rid), found, self.limits.call_timeout, acknowledge)

    def _subscribe(self, conn: Connection, agent: Agent, rid: jsonrpc.RequestId,
                   method: str, params: dict[str, Any]) -> None:
        """resources/subscribe, unsubscribe (handshake era): for the connection's home."""
        if self.resources is None or mcp.request_version(params.get("_meta")) is not None \
                or conn.home.key not in self.connections:
            raise RpcError(jsonrpc.METHOD_NOT_FOUND, f"Method not found: {method} (with "
                           "protocol version 2026-07-28, subscribe with subscriptions/listen)")
        self.resources.request((conn.home.key, None), agent, rid, method, params.get("uri"),
                               self.auth.may_read, self.limits.call_timeout, conn.send)

    def deliver_update(self, subscriber: resource_subs.Subscriber, uri: str) -> None:
        """notifications/resources/updated, to a connection or one of its listen streams."""
        conn = self.connections.get(subscriber[0])
        if conn is None:
            return
        rid = subscriber[1]
        if rid is None:
            conn.send(jsonrpc.notification(resource_subs.UPDATED, {"uri": uri}))
        else:
            conn.progress(jsonrpc.notification(resource_subs.UPDATED, {
                "uri": uri, "_meta": {mcp.META_SUBSCRIPTION: rid}}))

    def _initialize(self, conn: Connection, params: dict[str, Any]) -> dict[str, Any]:
        meta = params.get("_meta") or {}
        token = meta.get(mcp.META_TOKEN)
        if token is None and conn.curve_key is not None:
            self._curve_agent(conn)  # the key stands for the token; looked up per request
            conn.curve_initialized = True
            conn.capabilities = _declared(params)
            return mcp.initialize_result(params)
        agent = self.auth.agent_for(token)
        if agent is None:
            raise RpcError(jsonrpc.UNAUTHENTICATED, "Unauthenticated: initialize needs a "
                           f"valid bearer token in params._meta[{mcp.META_TOKEN!r}]")
        conn.agent = agent
        conn.capabilities = _declared(params)
        return mcp.initialize_result(params)

    def _curve_agent(self, conn: Connection) -> Agent:
        """The agent a Curve connection's key is registered for in the config in force:
        a key a reload removed stops working on open connections too."""
        agent = self.auth.agent_for_curve_key(conn.curve_key)
        if agent is None:
            raise RpcError(jsonrpc.UNAUTHENTICATED, "Unauthenticated: this connection's "
                                                    "Curve key is no longer registered")
        return agent

    def _agent(self, conn: Connection, meta: dict[str, Any] | None) -> Agent:
        if meta and mcp.META_TOKEN in meta:
            agent = self.auth.agent_for(meta[mcp.META_TOKEN])
            if agent is None:
                raise RpcError(jsonrpc.UNAUTHENTICATED, "Unauthenticated: the bearer token "
                                                        "is not valid")
            return agent
        if conn.agent is None and conn.curve_key is not None:
            return self._curve_agent(conn)
        if conn.agent is None:
            raise RpcError(jsonrpc.UNAUTHENTICATED, "Unauthenticated: send initialize with "
                           f"a token, or put one in params._meta[{mcp.META_TOKEN!r}]")
        conn.agent = self.auth.current(conn.agent)  # revoked since the handshake: None
        if conn.agent is None:
            raise RpcError(jsonrpc.UNAUTHENTICATED, "Unauthenticated: this connection's "
                                                    "token has been revoked")
        return conn.agent

    def _notification(self, conn: Connection, method: str, params: Any) -> None:
        if method == "notifications/cancelled" and isinstance(params, dict):
            rid = params.get("requestId")
            seq = conn.inflight.pop(rid, None)  # type: ignore[arg-type]
            if seq is not None:
                self._cancel(seq)
            ended = conn.listens.pop(rid, None)  # type: ignore[arg-type]  # a listen stream
            if ended is not None and self.resources is not None:
                self.resources.remove((conn.key, rid))

    def route_llm(self, conn: Connection, agent: Agent, method: str, body: bytes) -> None:
        """An AI gateway request (``method``: "llm/chat", "llm/messages", ...) of an agent
        the HTTP front has authenticated: routed, held, re-routed and failed like a tool
        call (STARTED marks the provider request going out).  Its frames reach ``conn``
        (ipc.messages, LLM frames); a request per connection, under id 0.  Raises
        RpcError (busy, quarantined) before it changes anything."""
        self._route(conn, 0, agent, method, None, body, messages.LLM_CALL,
                    self.limits.llm_timeout)

    def route_a2a(self, conn: Connection, agent: Agent, peer: str, version: str,
                  body: bytes) -> None:
        """An agent gateway request to ``peer``, like route_llm: its frames reach
        ``conn``; the caller's A2A-Version rides ahead of the body (ipc.messages)."""
        self._route(conn, 0, agent, f"a2a/{peer}", None, version.encode() + b"\n" + body,
                    messages.A2A_CALL, self.limits.a2a_timeout)

    def _route(self, conn: Connection, rid: jsonrpc.RequestId, agent: Agent, method: str,
               tool: str | None, raw: bytes, kind: bytes = messages.CALL,
               timeout: float | None = None) -> None:
        """Hand the request to its agent's worker; raises before it changes anything."""
        limits = self.limits
        if rid in conn.inflight:
            raise RpcError(jsonrpc.INVALID_REQUEST, f"Invalid Request: id {rid!r} is already "
                                                    "in flight on this connection")
        if len(conn.inflight) >= limits.max_inflight_per_connection:
            raise _refused(agent, method, tool, kind, RpcError(
                jsonrpc.BUSY, "Busy: this connection has "
                f"{limits.max_inflight_per_connection} calls in flight; retry later"))
        workers = self.workers()
        if not workers:
            raise RpcError(jsonrpc.INTERNAL_ERROR, "No gateway worker is configured")
        worker = workers[zlib.crc32(agent.name.encode()) % len(workers)]
        load = self._per_worker.get(worker.id, 0)
        if load >= limits.max_inflight_per_worker:
            raise _refused(agent, method, tool, kind, RpcError(
                jsonrpc.BUSY, f"Busy: gateway worker {worker.id} has {load} calls in "
                "flight; retry later"))
        timeout = limits.call_timeout if timeout is None else timeout
        now = time.monotonic()
        if method in CALL_METHODS or kind != messages.CALL:
            wait = self.quarantine.retry_after(agent.name, now)
            if wait:
                raise _refused(agent, method, tool, kind, _quarantined(agent.name, wait))
            if tool is not None:
                timeout = limits.tool_timeouts.get(tool, timeout)
        seq = next(self._seq)
        if kind != messages.CALL:
            tool = method  # what the worker serves, and the master's records name
        call = RoutedCall(conn, rid, agent.name, tool, worker,
                          messages.pack_call(seq, agent.name, tool, raw, kind),
                          now + timeout + 1.0)  # the worker times out first
        self.calls[seq] = call
        conn.inflight[rid] = seq
        self._per_worker[worker.id] = load + 1
        identity = worker.identity  # None while it is not READY: the call waits here
        if identity is not None:
            self.bus.send_raw(identity, call.payload)
            call.identity = identity

    # -- gateway -> agent -------------------------------------------------------------

    def on_worker_payload(self, identity: bytes, payload: bytes) -> None:
        kind = payload[:1]
        if kind == messages.REPLY:
            seq, raw = messages.unpack_seq(payload)
            call = self.calls.pop(seq, None)
            if call is None:
                return  # cancelled, timed out or the agent left
            self._finish(call, raw)
        elif kind == messages.STARTED:
            started = self.calls.get(messages.unpack_seq(payload)[0])
            if started is not None:
                started.reached_tool = True
        elif kind == messages.PROGRESS:
            seq, raw = messages.unpack_seq(payload)
            call = self.calls.get(seq)
            if call is not None:
                call.conn.progress(raw)
        elif kind == messages.ASK:
            call = self.calls.get(messages.unpack_seq(payload)[0])
            if call is not None:
                self.requests.put(call.conn, identity, payload)

    def notify_agents(self, raw: bytes) -> None:
        """A notification for every agent that did the handshake, and on every
        subscriptions/listen stream that asked for it (stamped with its id)."""
        method = str(orjson.loads(raw).get("method"))
        for conn in list(self.connections.values()):
            if conn.hears_broadcasts and (conn.agent is not None or conn.curve_initialized):
                conn.send(raw)
            for note in listen.notes_for(conn.listens, method) if conn.listens else ():
                conn.progress(note)

    def _finish(self, call: RoutedCall, raw: bytes) -> None:
        self._release(call)
        if self.requests.pending:
            self.requests.call_over(messages.unpack_seq(call.payload)[0])
        call.conn.inflight.pop(call.rid, None)
        call.conn.last_active = time.monotonic()
        call.conn.send(raw)

    def _release(self, call: RoutedCall) -> None:
        self._per_worker[call.worker.id] = self._per_worker.get(call.worker.id, 1) - 1

    def _fail(self, seq: int, code: int, message: str) -> None:
        """Answer a call the master gave up on; its audit record goes first."""
        call = self.calls.pop(seq, None)
        if call is None:
            return
        self._answer_error(call, RpcError(code, message), "lost")

    def _answer_error(self, call: RoutedCall, error: RpcError, kind: str) -> None:
        reply = jsonrpc.error(call.rid, error.code, error.message, error.data)
        if self.audit is None:
            self._finish(call, reply)
            return
        self.audit.submit(master_record(kind, call.agent, call.tool, error.code,
                                        error.message, worker=call.worker.id),
                          lambda _error: self._finish(call, reply))

    # -- worker lifecycle (the readiness gate) ----------------------------------------

    def worker_ready(self, worker: WorkerChild) -> None:
        identity = worker.identity
        if identity is None:
            return
        for call in self.calls.values():
            if call.worker is worker and call.identity is None:
                self.bus.send_raw(identity, call.payload)
                call.identity = identity

    def worker_gone(self, worker: WorkerChild, identity: bytes, culprit: int = 0) -> None:
        """``culprit``: the call whose own code was running when the worker hung or died
        (ipc.call_slot), or 0."""
        lost = [seq for seq, c in self.calls.items() if c.identity == identity]
        for seq in lost:
            call = self.calls[seq]
            if seq == culprit:
                self._fail(seq, jsonrpc.CALL_KILLED_WORKER, f"Gateway worker {worker.id} "
                           "hung or crashed while running this call; it was not retried, "
                           "so that it cannot take another worker down")
                self.strike(call.agent, "crashed", f"call {call.tool or '?'} hung or crashed "
                            f"{worker.id}")
            elif call.reached_tool:
                self._fail(seq, jsonrpc.WORKER_CRASHED, f"Gateway worker {worker.id} "
                           "stopped while running this call; its outcome is unknown")
            else:
                call.identity = None  # had not reached a tool: goes to the replacement
        if lost:
            log.warning("%s: %d calls in flight when it exited", worker.id, len(lost))
        current = worker.identity
        if current is not None and current != identity:
            self.worker_ready(worker)  # a replacement is already READY (make-before-break)

    # -- poison calls -------------------------------------------------------------------

    def overran(self, seq: int, plugin: str) -> None:
        """RoutedCall ``seq``'s hook in ``plugin`` overran its budget and is being interrupted."""
        call = self.calls.get(seq)
        if call is not None:
            call.overran = True  # its answer (a denial) comes from the worker
            self.strike(call.agent, "overran", f"plugin {plugin} overran its budget on "
                        f"{call.tool or '?'}")

    def strike(self, agent: str, why: str, detail: str) -> None:
        now = time.monotonic()
        if not self.quarantine.strike(agent, why, detail, now):
            return
        # Its calls still queued go nowhere: answered now, and cancelled in the worker
        # (sent at once, so that they arrive before the worker reads its next call).
        error = _quarantined(agent, self.quarantine.retry_after(agent, now))
        for seq, call in list(self.calls.items()):
            if call.agent == agent and not (call.reached_tool or call.overran):
                del self.calls[seq]
                if call.identity is not None:
                    self.bus.send_raw(call.identity, messages.pack_cancel(seq))
                self._answer_error(call, error, "refused")
        self.bus.flush()

    def expire(self, now: float) -> None:
        """Backstop for calls whose worker never came back within their timeout."""
        for seq in [s for s, c in self.calls.items() if c.deadline < now]:
            self._fail(seq, jsonrpc.TIMED_OUT, "Timed out: no gateway worker answered in time")
        if self.resources is not None:
            self.resources.expire(now)

    def sweep_idle(self, now: float, idle_timeout: float) -> None:
        for conn in list(self.connections.values()):
            watching = self.resources is not None and self.resources.watching(conn.key)
            if not (conn.inflight or conn.listens or watching) \
                    and now - conn.last_active > idle_timeout:
                log.info("closing idle %s connection after %.0fs", conn.transport,
                         now - conn.last_active)
                conn.close()
                self.detach(conn)


class Refused(RpcError):
    """A tools/call turned away before any worker saw it: it still leaves a record (its
    answer is an error, so it does not wait for it)."""

    def __init__(self, agent: str, tool: str | None, error: RpcError) -> None:
        super().__init__(error.code, error.message, error.data)
        self.agent = agent
        self.tool = tool


def _declared(params: dict[str, Any]) -> dict[str, Any]:
    capabilities = params.get("capabilities")
    return capabilities if isinstance(capabilities, dict) else {}


def _refused(agent: Agent, method: str, tool: str | None, kind: bytes,
             error: RpcError) -> RpcError:
    """A tool call, LLM or A2A request turned away here: Refused, so it is recorded (an
    AI or agent gateway request is recorded under its method, e.g. "llm/chat")."""
    if method in CALL_METHODS:
        return Refused(agent.name, tool, error)
    return Refused(agent.name, method, error) if kind != messages.CALL else error


def _quarantined(agent: str, wait: float) -> RpcError:
    return RpcError(jsonrpc.QUARANTINED, f"Quarantined: agent {agent}'s calls kept hanging, "
                    "crashing or overrunning gateway workers; retry in "
                    f"{math.ceil(wait)}s", {"retry_after": math.ceil(wait)})
