"""The AI gateway's HTTP routes (OpenAI- and Anthropic-compatible), in the master.

    GET  /v1/models             POST /v1/chat/completions
    POST /v1/embeddings         POST /v1/messages (Anthropic)

The agent's token is its API key: ``Authorization: Bearer`` (OpenAI SDK) or ``x-api-key``
(Anthropic SDK).  The master only authenticates and routes: the body goes to the agent's
gateway worker as it came (Switchboard.route_llm), and the worker's LLM frames come back
(ipc.messages): a whole response, or a stream's head, its bytes as they arrive, and its
end.  A request per Connection, so the switchboard's machinery holds, re-routes and
fails it like a tool call; a client that goes away cancels it (and so the provider
request); front.worker_stream writes the answer out, in the API's own error shape when
it is the master's (busy, timed out, the worker died).
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

import orjson
from aiohttp import web

from daemon.front.auth import Agent
from daemon.front.llm_slots import RETRY_AFTER, AgentSlots
from daemon.front.switchboard import Refused, Switchboard
from daemon.front.worker_stream import MAX_HELD, Frames, relay
from daemon.ipc import messages
from daemon.llm.apis import Anthropic, Api, OpenAi
from daemon.protocol import jsonrpc
from daemon.protocol.jsonrpc import RpcError


class HttpFront(Protocol):
    """What the routes need of daemon.front.http.HttpFront (which adds them)."""

    app: web.Application
    board: Switchboard
    max_bytes: int

    def agent(self, request: web.Request, token: str | None = None) -> Agent: ...


log = logging.getLogger("http")
ROUTES = (("GET", "/v1/models", "llm/models"),
          ("GET", "/v1/models/{model:.+}", "llm/models"),  # one model (models.retrieve)
          ("POST", "/v1/chat/completions", "llm/chat"),
          ("POST", "/v1/embeddings", "llm/embeddings"),
          ("POST", "/v1/messages", "llm/messages"))
# the master's JSON-RPC error codes -> HTTP status
STATUS = {jsonrpc.BUSY: 429, jsonrpc.WORKER_CRASHED: 502, jsonrpc.CALL_KILLED_WORKER: 502,
          jsonrpc.TIMED_OUT: 504, jsonrpc.AUDIT_UNAVAILABLE: 503, jsonrpc.QUARANTINED: 429,
          jsonrpc.UNAUTHENTICATED: 401}


# Request headers the provider gets as the client sent them (Anthropic's API version and
# beta features); every other header stays here (the token above all)
PASSED = ("anthropic-version", "anthropic-beta")
def add_routes(front: HttpFront) -> None:
    slots = AgentSlots()  # one count per agent across the routes
    for verb, path, method in ROUTES:
        front.app.router.add_route(verb, path, LlmRoute(front, method, slots).handle)
    # any other /v1 path (the Responses API, legacy completions…): a clear 404 that says
    # what is served, in OpenAI's shape, after the token check like every route
    front.app.router.add_route("*", "/v1/{tail:.*}", LlmRoute(front, "").unserved)


class LlmRoute:
    def __init__(self, front: HttpFront, method: str,
                 slots: AgentSlots | None = None) -> None:
        self.front = front
        self.method = method
        self.slots = slots or AgentSlots()
        self.api: Api = Anthropic if method == "llm/messages" else OpenAi

    def _error(self, status: int, message: str, code: str | None = None,
               headers: dict[str, str] | None = None) -> web.Response:
        return web.Response(body=self.api.error(status, message, code), status=status,
                            headers=headers, content_type="application/json")

    def too_large(self) -> web.Response:
        """A body over the cap, in the API's shape (HttpFront's guard asks for it too)."""
        return self._error(413, "Request body larger than [listen] max_message_bytes "
                                f"({self.front.max_bytes} bytes)", "request_too_large")

    def _agent(self, request: web.Request) -> Agent | web.Response:
        scheme, _, bearer = request.headers.get("Authorization", "").partition(" ")
        token = bearer.strip() if scheme.lower() == "bearer" else ""
        token = token or request.headers.get("x-api-key", "").strip()
        try:
            return self.front.agent(request, token or None)
        except web.HTTPUnauthorized as exc:
            message = orjson.loads(exc.body or b"{}")["error"]["message"]  # type: ignore[arg-type]
            return self._error(401, message, "invalid_api_key",
                               {"WWW-Authenticate": 'Bearer realm="workingagents"'})

    async def handle(self, request: web.Request) -> web.StreamResponse:
        agent = self._agent(request)
        if isinstance(agent, web.Response):
            return agent
        cap = self.front.board.limits.llm_per_agent
        if not self.slots.take(agent.name, cap):
            return self._too_many(agent, cap)
        try:
            return await self._handle(request, agent)
        finally:
            self.slots.give(agent.name)

    def _too_many(self, agent: Agent, cap: int) -> web.Response:
        message = self.slots.refusal(cap)
        self.front.board.record_refusal(Refused(agent.name, self.method, RpcError(
            jsonrpc.BUSY, message)), http=429)
        return self._error(429, message, "rate_limit_exceeded",
                           {"retry-after": str(RETRY_AFTER)})

    async def _handle(self, request: web.Request, agent: Agent) -> web.StreamResponse:
        try:
            body = await request.read() if request.method == "POST" else b""
            if "model" in request.match_info:  # GET /v1/models/{model}
                body = orjson.dumps({"model": request.match_info["model"]})
        except web.HTTPRequestEntityTooLarge:
            return self.too_large()
        passed = {k: v for k in PASSED if (v := request.headers.get(k)) is not None}
        for name, value in passed.items():  # tokens and dates: undecodable bytes are
            if not value.isascii() or not value.isprintable():  # no header to pass on
                return self._error(400, f"{name}: printable ASCII expected")
        board = self.front.board
        frames = Frames(board.credit)  # the worker reads its provider as the client reads
        try:
            board.route_llm(frames.conn, agent, self.method,
                            messages.pack_llm_request(passed, body))
        except RpcError as exc:
            board.record_refusal(exc, http=STATUS.get(exc.code, 500))
            return self._master_error(exc.code, exc.message, exc.data)
        try:
            return await relay(request, frames, self._refusal, self._stream_error)
        finally:
            board.detach(frames.conn)  # a client that left: the worker cancels the request

    async def unserved(self, request: web.Request) -> web.StreamResponse:
        agent = self._agent(request)
        if isinstance(agent, web.Response):
            return agent
        served = ", ".join(f"{verb} {path}" for verb, path, _m in ROUTES)
        return self._error(404, f"{request.method} {request.path[:200]} is not served by "
                                f"the AI gateway (it serves {served})", "unknown_url")

    def _refusal(self, error: dict[str, Any]) -> web.Response:
        return self._master_error(error.get("code", 0), str(error.get("message", "Error")),
                                  error.get("data"))

    def _stream_error(self, error: dict[str, Any] | None) -> bytes:
        if error is None:
            return self.api.stream_error(502, "The client read the stream too slowly: the "
                                              f"gateway held {MAX_HELD >> 20} MiB for it "
                                              "and dropped the request")
        return self.api.stream_error(STATUS.get(error.get("code", 0), 502),
                                     str(error.get("message", "Error")))

    def _master_error(self, code: int, message: str, data: object = None) -> web.Response:
        status = STATUS.get(code, 500)
        headers: dict[str, str] = {}
        if code == jsonrpc.QUARANTINED and isinstance(data, dict):
            headers = {"retry-after": str(data.get("retry_after", 30)),
                       "x-should-retry": "false"}
        elif status in (502, 504):
            headers = {"x-should-retry": "false"}  # the gateway does not know the outcome
        return self._error(status, message, None, headers)
