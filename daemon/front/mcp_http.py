"""``/mcp``: MCP Streamable HTTP, both eras, with the TCP shim's semantics.

Each POSTed request becomes an Exchange (front.mcp_exchange) handed to the switchboard,
so it takes the same path as a TCP line: auth, shard, worker, audit.  Its answer is the
HTTP response: JSON, or SSE once the call streams progress and the client accepts SSE.
A client that drops the response cancels the call (aiohttp cancels the handler).

Handshake era (2024-11-05 … 2025-11-25): ``initialize`` is answered here and opens a
Session (``Mcp-Session-Id``, which then stands for the token on later requests); a
request without one gets 400, an unknown or ended one 404; ``GET`` opens the session's
notification stream (tools/list_changed); ``DELETE`` ends it.
An upstream's request during a call (sampling, elicitation, roots/list) is an SSE event
of the call's POST stream; the agent POSTs its response in the same session
(front.agent_requests).  Its log messages and progress ride that stream too.
Stateless era (2026-07-28): no session; the routing headers must match the body
(-32020), and JSON-RPC errors take the spec's HTTP status (400, 404).

Authentication: ``Authorization: Bearer``, else the session, else the body's
``_meta`` token; none, or one that is not valid: 401 with ``WWW-Authenticate``.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

import msgspec
import orjson
from aiohttp import web

from daemon import metrics
from daemon.audit.records import master_record
from daemon.front.auth import Agent
from daemon.front.http_replies import bearer_token, json_error
from daemon.front.mcp_exchange import Exchange, Session, sse_event
from daemon.front.mcp_headers import (
    HEADER_SESSION,
    HEADER_VERSION,
    STATELESS_STATUS,
    accepts,
    stateless_refusal,
)
from daemon.protocol import jsonrpc, mcp

if TYPE_CHECKING:
    from daemon.front.http import HttpFront

SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
               "X-Accel-Buffering": "no"}
CHALLENGE = {"WWW-Authenticate": 'Bearer realm="workingagents"'}
# an agent's sessions beyond this end the least recently active one (it gets 404 and
# initializes again, as the spec says): what a client that never DELETEs can hold
MAX_SESSIONS_PER_AGENT = 1024
KEEPALIVE = 15.0  # at most this between comments on an idle GET stream (finds dead readers)


class RpcUnauthenticated(web.HTTPUnauthorized):
    """401 whose JSON body is also a JSON-RPC error (-32010), so that an SDK client shows
    the reason rather than a bare status."""

    def __init__(self, rid: Any, message: str) -> None:
        metrics.unauthenticated("http")
        super().__init__(body=jsonrpc.error(rid if jsonrpc.valid_id(rid) else None,
                                            jsonrpc.UNAUTHENTICATED, message, {"status": 401}),
                         content_type="application/json", headers=CHALLENGE)


class _ErrorHead(msgspec.Struct):
    code: int = 0


class _ReplyHead(msgspec.Struct):
    error: _ErrorHead | None = None


_reply_head = msgspec.json.Decoder(_ReplyHead)


def add_routes(front: HttpFront) -> None:
    McpRoute(front)


def rpc_response(body: bytes, status: int = 200,
                 headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=body, status=status, headers=headers,
                        content_type="application/json")


def rpc_error(rid: Any, code: int, message: str, status: int = 200) -> web.Response:
    return rpc_response(jsonrpc.error(rid if jsonrpc.valid_id(rid) else None, code, message),
                        status)


class McpRoute:
    def __init__(self, front: HttpFront) -> None:
        self.front = front
        self.sessions: dict[str, Session] = {}
        self.by_agent: dict[str, dict[str, Session]] = {}  # agent -> its sessions
        self.stateless_load: dict[str, int] = {}  # agent -> its stateless calls in flight
        front.app.router.add_post("/mcp", self.post)
        front.app.router.add_get("/mcp", self.get)
        front.app.router.add_delete("/mcp", self.delete)
        front.app.on_shutdown.append(self._shutdown)

    # -- POST: one JSON-RPC message ------------------------------------------------------

    async def post(self, request: web.Request) -> web.StreamResponse:
        if request.content_type != "application/json":
            return json_error(415, "Unsupported Media Type: POST /mcp takes "
                                   "Content-Type: application/json")
        json_ok, sse_ok = accepts(request)
        if not (json_ok or sse_ok):
            return json_error(406, "Not Acceptable: accept application/json and "
                                   "text/event-stream")
        raw = await request.read()
        try:
            message = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            return rpc_error(None, jsonrpc.PARSE_ERROR, f"Parse error: {exc}", 400)
        if type(message) is not dict:
            return rpc_error(None, jsonrpc.INVALID_REQUEST, "Invalid Request: the body must "
                             "be one JSON-RPC message (batches are not supported)", 400)
        params = message.get("params")
        params = params if isinstance(params, dict) else {}
        meta = params.get("_meta")
        meta = meta if isinstance(meta, dict) else None
        session = self._session_of(request)
        if isinstance(session, web.Response):
            return session
        agent = self._agent(request, session, meta, message.get("id"))
        method = message.get("method")
        if "id" not in message or not isinstance(method, str):
            if session is not None and method == "notifications/cancelled":
                self._cancel(session, params.get("requestId"))
            elif session is not None and "id" in message and method is None:
                # the agent answers what an upstream asked it on a call's stream
                self.front.board.on_message(session.conn, raw)
            return web.Response(status=202)  # notifications and responses: no answer
        rid = message["id"]
        if not jsonrpc.valid_id(rid):
            return rpc_error(None, jsonrpc.INVALID_REQUEST, "Invalid Request: needs a string "
                                                            "or integer id", 400)
        if method == "initialize":
            if session is not None:
                return rpc_error(rid, jsonrpc.INVALID_REQUEST, "Invalid Request: this session "
                                 "is initialized; send initialize without Mcp-Session-Id", 400)
            return self._initialize(agent, rid, params)
        # a version past the handshake era, in the header or the body: the switchboard
        # answers one it does not speak with -32022
        named = (request.headers.get(HEADER_VERSION), (meta or {}).get(mcp.META_VERSION))
        stateless = session is None and any(v is not None and v not in mcp.HANDSHAKE_VERSIONS
                                            for v in named)
        if stateless:
            refusal = stateless_refusal(request, message, params, meta)
            if refusal is not None:
                return rpc_error(rid, *refusal, 400)
        elif session is None:
            return json_error(400, f"Bad Request: {HEADER_SESSION} header required; send "
                                   "initialize first (or use protocol version 2026-07-28)")
        return await self._call(request, raw, rid, method, params, agent, session,
                                stateless, json_ok, sse_ok)

    def _session_of(self, request: web.Request) -> Session | web.Response | None:
        session_id = request.headers.get(HEADER_SESSION)
        if session_id is None:
            return None
        session = self.sessions.get(session_id)
        if session is None:
            return json_error(404, "Not Found: no such MCP session (it ended or expired); "
                                   "initialize a new one")
        version = request.headers.get(HEADER_VERSION)
        if version is not None and version not in mcp.HANDSHAKE_VERSIONS:
            return json_error(400, f"Bad Request: unsupported {HEADER_VERSION} {version[:40]!r}"
                                   f" (supported: {', '.join(mcp.HANDSHAKE_VERSIONS)})")
        session.conn.last_active = time.monotonic()
        return session

    def _agent(self, request: web.Request, session: Session | None,
               meta: dict[str, Any] | None, rid: Any = None) -> Agent:
        """Bearer header, else the session's agent, else the _meta token; else 401."""
        board = self.front.board
        token = bearer_token(request)
        agent: Agent | None
        if token is not None:
            agent = board.auth.agent_for(token)
        elif session is not None and session.agent is not None:
            agent = board.auth.current(session.agent)  # revoked since initialize: None
        elif meta is not None and mcp.META_TOKEN in meta:
            agent = board.auth.agent_for(meta[mcp.META_TOKEN])
        else:
            raise RpcUnauthenticated(rid, "Unauthenticated: send Authorization: Bearer <agent "
                                       "token>")
        if agent is None:
            raise RpcUnauthenticated(rid, "Unauthenticated: the token is not valid")
        if session is not None and session.agent is not None:
            # a _meta token names the request's agent too (the switchboard runs the call
            # as it): neither may be another agent than the session's
            names = {agent.name}
            if meta is not None and mcp.META_TOKEN in meta:
                claimed = board.auth.agent_for(meta[mcp.META_TOKEN])
                names.add(claimed.name if claimed is not None else session.agent.name)
            if names != {session.agent.name}:
                raise web.HTTPNotFound(  # another agent's session does not exist for it
                    body=orjson.dumps({"error": {"status": 404, "message": "Not Found: no "
                                                                          "such MCP session"}}),
                    content_type="application/json")
        return agent

    def _initialize(self, agent: Agent, rid: jsonrpc.RequestId,
                    params: dict[str, Any]) -> web.Response:
        result = mcp.initialize_result(params)
        mine = self.by_agent.setdefault(agent.name, {})
        if len(mine) >= MAX_SESSIONS_PER_AGENT:  # a client that never DELETEs its sessions
            min(mine.values(), key=lambda s: s.conn.last_active).end()
        session = Session(self.front.board, agent, result["protocolVersion"], self._forget)
        capabilities = params.get("capabilities")
        session.conn.capabilities = capabilities if isinstance(capabilities, dict) else {}
        self.sessions[session.id] = session
        mine[session.id] = session
        return rpc_response(jsonrpc.result(rid, result), headers={HEADER_SESSION: session.id})

    def _forget(self, session: Session) -> None:
        self.sessions.pop(session.id, None)
        agent = session.agent
        mine = self.by_agent.get(agent.name) if agent is not None else None
        if mine is not None:
            mine.pop(session.id, None)
            if not mine and agent is not None:
                del self.by_agent[agent.name]

    def _cancel(self, session: Session, rid: Any) -> None:
        exchange = session.exchanges.get(rid) if jsonrpc.valid_id(rid) else None
        if exchange is not None:
            self.front.board.detach(exchange.conn)  # cancels its call in its worker
            exchange.cancel()

    # -- a call: the switchboard answers the exchange -------------------------------------

    async def _call(self, request: web.Request, raw: bytes, rid: jsonrpc.RequestId,
                    method: str, params: dict[str, Any], agent: Agent,
                    session: Session | None, stateless: bool, json_ok: bool,
                    sse_ok: bool) -> web.StreamResponse:
        board = self.front.board
        cap = board.limits.max_inflight_per_connection
        if session is not None:
            if rid in session.exchanges:
                return rpc_error(rid, jsonrpc.INVALID_REQUEST, f"Invalid Request: id {rid!r} "
                                 "is already in flight in this session")
            load = len(session.exchanges)
        else:
            load = self.stateless_load.get(agent.name, 0)
        if load >= cap:
            return self._busy(rid, method, params, agent, cap, session is not None)
        listens = method == "subscriptions/listen"
        if listens and not sse_ok:
            return rpc_error(rid, jsonrpc.INVALID_REQUEST, "Invalid Request: "
                             "subscriptions/listen answers with a stream: send Accept: "
                             "text/event-stream", 400)
        exchange = Exchange(agent)
        if session is not None and sse_ok:  # upstreams' requests may ride its SSE stream
            exchange.conn.capabilities = session.conn.capabilities
        if listens:  # list changes reach the connections the switchboard knows
            board.attach(exchange.conn)
        if session is not None:
            session.exchanges[rid] = exchange
            # its resource subscriptions are the session's, and it answers what an
            # upstream asks on its stream by a POST in the session
            exchange.conn.home = session.conn
        else:
            self.stateless_load[agent.name] = load + 1
        try:
            board.on_message(exchange.conn, raw)
            return await self._respond(request, exchange, rid, stateless, json_ok, sse_ok)
        finally:
            if listens or not exchange.finished:  # the client went away: cancel the call
                board.detach(exchange.conn)
            if session is not None:
                if session.exchanges.get(rid) is exchange:
                    del session.exchanges[rid]
                session.conn.last_active = time.monotonic()
            else:
                left = self.stateless_load.pop(agent.name, 1) - 1
                if left:
                    self.stateless_load[agent.name] = left

    def _busy(self, rid: jsonrpc.RequestId, method: str, params: dict[str, Any],
              agent: Agent, cap: int, in_session: bool) -> web.Response:
        message = (f"Busy: this {'session' if in_session else 'agent'} has {cap} calls in "
                   "flight; retry later")
        audit = self.front.board.audit
        if method == "tools/call" and audit is not None:  # audited like the shim's refusal
            tool = params.get("name")
            audit.submit(master_record("refused", agent.name,
                                       tool if isinstance(tool, str) else None,
                                       jsonrpc.BUSY, message))
        return rpc_error(rid, jsonrpc.BUSY, message)

    async def _respond(self, request: web.Request, exchange: Exchange,
                       rid: jsonrpc.RequestId, stateless: bool, json_ok: bool,
                       sse_ok: bool) -> web.StreamResponse:
        stream: web.StreamResponse | None = None
        while True:
            await exchange.wait()
            streamed = exchange.take_streamed()  # a JSON-only client gets the answer alone
            if streamed and sse_ok:  # progress: the response becomes SSE
                events = b"".join(sse_event(r) for r in streamed)
                if stream is None:
                    stream = web.StreamResponse(headers=SSE_HEADERS)
                    await stream.prepare(request)
                await stream.write(events)
            answer = exchange.answer
            if answer is None and not exchange.cancelled:
                continue
            if stream is None and json_ok:
                if answer is None:
                    return rpc_error(rid, jsonrpc.INVALID_REQUEST, "Request cancelled")
                return self._json_answer(answer, stateless)
            if stream is None:
                stream = web.StreamResponse(headers=SSE_HEADERS)
                await stream.prepare(request)
            if answer is not None:
                await stream.write(sse_event(answer))
            await stream.write_eof()
            return stream

    @staticmethod
    def _json_answer(answer: bytes, stateless: bool) -> web.Response:
        if b'"error"' not in answer:
            return rpc_response(answer)
        try:
            error = _reply_head.decode(answer).error
        except msgspec.DecodeError:
            error = None
        if error is None:
            return rpc_response(answer)
        if error.code == jsonrpc.UNAUTHENTICATED:  # counted by the switchboard
            return rpc_response(answer, 401, CHALLENGE)
        return rpc_response(answer, STATELESS_STATUS.get(error.code, 200) if stateless
                            else 200)

    # -- GET: a session's notification stream; DELETE: its end -----------------------------

    def _session_for(self, request: web.Request) -> Session | web.Response:
        found = self._session_of(request)
        if found is None:
            return json_error(400, f"Bad Request: {HEADER_SESSION} header required (GET and "
                                   "DELETE are for handshake-era sessions)")
        if isinstance(found, Session):
            self._agent(request, found, None)
        return found

    async def get(self, request: web.Request) -> web.StreamResponse:
        if HEADER_SESSION not in request.headers:
            # the spec: an SSE stream or 405, which clients (the TypeScript SDK's GET,
            # a stateless client's probe) take as "no stream here" and go on
            return json_error(405, f"Method Not Allowed: GET /mcp is a session's stream; "
                                   f"send its {HEADER_SESSION} (stateless 2026-07-28 clients "
                                   "only POST)", headers={"Allow": "GET, POST, DELETE"})
        if not accepts(request)[1]:
            return json_error(406, "Not Acceptable: GET /mcp is an SSE stream; accept "
                                   "text/event-stream")
        session = self._session_for(request)
        if isinstance(session, web.Response):
            return session
        queue = session.open_stream()
        stream = web.StreamResponse(headers=SSE_HEADERS)
        await stream.prepare(request)
        # a session whose client holds its stream open (and reads it) is not idle: an
        # SDK client does not initialize again after a 404, so sweeping it breaks an IDE
        # that merely sat quiet
        beat = min(KEEPALIVE, self.front.board.limits.idle_timeout / 2)
        try:
            while True:
                try:
                    event = await asyncio.wait_for(queue.get(), beat)
                except TimeoutError:
                    event = b": keepalive\n\n"
                if event is None:
                    break
                await stream.write(event)
                session.conn.last_active = time.monotonic()
        except ConnectionError:
            pass  # the client went away; it may open another
        finally:
            if session.stream is queue:
                session.stream = None
            session.conn.last_active = time.monotonic()
        return stream

    async def delete(self, request: web.Request) -> web.Response:
        session = self._session_for(request)
        if isinstance(session, web.Response):
            return session
        session.end()
        return web.Response(status=204)

    async def _shutdown(self, _app: web.Application) -> None:
        for session in list(self.sessions.values()):
            session.end()

