"""The AI gateway's HTTP routes (OpenAI- and Anthropic-compatible), in the master.

    GET  /v1/models             POST /v1/chat/completions
    POST /v1/embeddings         POST /v1/messages (Anthropic)

The agent's token is its API key: ``Authorization: Bearer`` (OpenAI SDK) or ``x-api-key``
(Anthropic SDK).  The master only authenticates and routes: the body goes to the agent's
gateway worker as it came (Switchboard.route_llm), and the worker's LLM frames come back
(ipc.messages): a whole response, or a stream's head, its bytes as they arrive, and its
end.  A request per Connection, so the switchboard's machinery holds, re-routes and
fails it like a tool call; a client that goes away cancels it (and so the provider
request).  A stream is written out as the client reads it; the master holds at most
MAX_HELD bytes of it for a slow client (then it drops the request).  The master's own
answers (busy, timed out, the worker died) are JSON-RPC errors, turned here into the
API's error shape, or an SSE error event mid-stream: a stream never just stops as if it
were complete.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

import orjson
from aiohttp import web

from daemon.front.auth import Agent
from daemon.front.switchboard import Connection, Switchboard
from daemon.ipc import messages
from daemon.llm.apis import Anthropic, Api, OpenAi
from daemon.protocol import jsonrpc
from daemon.protocol.jsonrpc import RpcError


class HttpFront(Protocol):
    """What the routes need of daemon.front.http.HttpFront (which adds them)."""

    app: web.Application
    board: Switchboard

    def agent(self, request: web.Request, token: str | None = None) -> Agent: ...


log = logging.getLogger("http")
ROUTES = (("GET", "/v1/models", "llm/models"),
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
# Bytes of a stream the master may hold for a client that reads more slowly than the
# provider writes; past it the request is dropped (an error event ends the stream)
MAX_HELD = 16 << 20


class Frames:
    """What the worker sent for one request, until the route has written it out."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[bool, bytes]] = asyncio.Queue()
        self.held = 0

    def more(self, raw: bytes) -> None:
        self.held += len(raw)
        self.queue.put_nowait((False, raw))

    def last(self, raw: bytes) -> None:
        self.queue.put_nowait((True, raw))

    async def get(self) -> tuple[bool, bytes]:
        last, raw = await self.queue.get()
        if not last:
            self.held -= len(raw)
        return last, raw

    @property
    def overflowing(self) -> bool:
        return self.held > MAX_HELD


def add_routes(front: HttpFront) -> None:
    for verb, path, method in ROUTES:
        front.app.router.add_route(verb, path, LlmRoute(front, method).handle)


class LlmRoute:
    def __init__(self, front: HttpFront, method: str) -> None:
        self.front = front
        self.method = method
        self.api: Api = Anthropic if method == "llm/messages" else OpenAi

    def _error(self, status: int, message: str, code: str | None = None,
               headers: dict[str, str] | None = None) -> web.Response:
        return web.Response(body=self.api.error(status, message, code), status=status,
                            headers=headers, content_type="application/json")

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
        body = await request.read() if request.method == "POST" else b""
        frames = Frames()
        conn = Connection(frames.last, lambda: None, "http", frames.more)
        board = self.front.board
        try:
            board.route_llm(conn, agent, self.method, messages.pack_llm_request(
                {k: v for k in PASSED if (v := request.headers.get(k)) is not None}, body))
        except RpcError as exc:
            return self._master_error(exc.code, exc.message, exc.data)
        try:
            return await self._answer(request, frames)
        finally:
            board.detach(conn)  # a client that left: the worker cancels the request

    async def _answer(self, request: web.Request, frames: Frames) -> web.StreamResponse:
        response: web.StreamResponse | None = None
        while True:
            last, frame = await frames.get()
            tag = frame[:1]
            if frames.overflowing and response is not None:  # handle() cancels it
                await response.write(self.api.stream_error(
                    502, "The client read the stream too slowly: the gateway held "
                         f"{MAX_HELD >> 20} MiB for it and dropped the request"))
                await response.write_eof()
                return response
            if tag == b"{":  # the master's own answer: the worker died, a timeout...
                error = orjson.loads(frame).get("error") or {}
                code, message = error.get("code", 0), str(error.get("message", "Error"))
                if response is None:
                    return self._master_error(code, message, error.get("data"))
                await response.write(self.api.stream_error(STATUS.get(code, 502), message))
                await response.write_eof()
                return response
            if tag == messages.LLM_WHOLE:
                status, headers, body = messages.unpack_llm_head(frame)
                return web.Response(body=body, status=status, headers=headers)
            if tag == messages.LLM_HEAD:
                status, headers, _ = messages.unpack_llm_head(frame)
                response = web.StreamResponse(status=status, headers=headers)
                await response.prepare(request)
            elif (response is not None and tag in (messages.LLM_DATA, messages.LLM_END)
                  and len(frame) > 1):
                await response.write(frame[1:])
            if last:
                if response is None:
                    return self._error(502, "Internal error: an answer without a head")
                await response.write_eof()
                return response

    def _master_error(self, code: int, message: str, data: object = None) -> web.Response:
        status = STATUS.get(code, 500)
        headers: dict[str, str] = {}
        if code == jsonrpc.QUARANTINED and isinstance(data, dict):
            headers = {"retry-after": str(data.get("retry_after", 30)),
                       "x-should-retry": "false"}
        elif status in (502, 504):
            headers = {"x-should-retry": "false"}  # the gateway does not know the outcome
        return self._error(status, message, None, headers)
