"""The HTTP front door: one aiohttp server on `[listen] http` for every HTTP route.

The server is the master's, like the TCP shim: it holds the agents' HTTP connections,
so a worker restart never drops one.  Each front door adds its own routes (/mcp, /v1/…,
/a2a/…) with ``add_routes(front)``, called from ``HttpFront.__init__``; this module owns
what they share: the listener (and TLS), the Origin allow-list (DNS rebinding), the body
cap, bearer authentication, and ``GET /healthz`` for load balancers (no token).  The
JSON bodies and errors are in front.http_replies, which the route modules import (they
cannot import this module, which imports them).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from yarl import URL

from daemon.a2a.cards import CardKeeper
from daemon.config import Settings
from daemon.front import a2a_http, llm_http, mcp_http
from daemon.front.auth import Agent
from daemon.front.http_replies import Unauthenticated, bearer_token, json_error, json_response
from daemon.front.switchboard import Switchboard

log = logging.getLogger("http")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class MalformedRequests(logging.Filter):
    """aiohttp logs a request it cannot parse as an ERROR with a traceback that quotes
    the offending bytes, which may be an Authorization header: a token in the log, and a
    dozen lines per bad request for anyone to cause.  One short debug line instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if not isinstance(exc, HttpProcessingError):
            return True  # our own failures keep their traceback
        remote = record.args[0] if isinstance(record.args, tuple) and record.args else "?"
        log.debug("malformed HTTP request from %s: %s %s", remote, exc.code,
                  type(exc).__name__)
        return False


server_log = logging.getLogger("http.server")
server_log.addFilter(MalformedRequests())


class OriginPolicy:
    """``[listen] http_origins``: scheme://host[:port] exactly, or with ":*" for any port."""

    def __init__(self, patterns: list[str]) -> None:
        self.patterns = tuple(patterns)
        self.exact = {p for p in patterns if not p.endswith(":*")}
        self.any_port = {p[:-2] for p in patterns if p.endswith(":*")}

    def allows(self, origin: str) -> bool:
        if origin in self.exact:
            return True
        try:
            url = URL(origin)
        except ValueError:
            return False
        if url.path not in ("", "/") or url.query_string or url.user or not url.host:
            return False
        host = f"[{url.host}]" if ":" in url.host else url.host
        return f"{url.scheme}://{host}" in self.any_port


class HttpFront:
    def __init__(self, board: Switchboard, settings: Settings,
                 health: Callable[[], dict[str, Any]], cards: CardKeeper | None = None) -> None:
        """``health``: {"health", "reasons", "serving"} (see Master.http_health)."""
        self.board = board
        self.health = health
        listen = settings.config.listen
        self.origins = OriginPolicy(listen.http_origins)
        self.max_bytes = listen.max_message_bytes
        self.line_timeout = listen.line_timeout
        self.app = web.Application(client_max_size=listen.max_message_bytes,
                                   middlewares=[self._guard])
        self.app.router.add_get("/healthz", self.healthz)
        for add_routes in (mcp_http.add_routes, llm_http.add_routes):
            add_routes(self)
        a2a_http.add_routes(self, cards)
        self.runner: web.AppRunner | None = None
        self.address = ""

    def apply(self, settings: Settings) -> list[str]:
        self.line_timeout = settings.config.listen.line_timeout  # bodies; headers: at start
        patterns = settings.config.listen.http_origins
        if tuple(patterns) == self.origins.patterns:
            return []
        self.origins = OriginPolicy(patterns)
        return ["listen.http_origins"]

    # -- the listener ---------------------------------------------------------------------

    async def start(self, address: str, tls_cert: str = "", tls_key: str = "") -> str:
        """Listen; returns "host:port" as bound (port 0 picks a free one)."""
        context = None
        if tls_cert:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(tls_cert, tls_key)  # OSError / SSLError: cannot start
        host, _, port = address.rpartition(":")
        # keepalive_timeout: a connection waiting for a request, or for the rest of its
        # headers (slowloris), is closed after line_timeout (aiohttp's default is an hour).
        # handler_cancellation: a client that drops its request cancels its call (and an
        # LLM request's provider call).  auto_decompress off: aiohttp would inflate a
        # compressed body on the master's loop, and drain it all after a 413 (a 1 MB gzip
        # body inflates to 1 GB: seconds in which no agent is served); _guard refuses it.
        self.runner = web.AppRunner(self.app, access_log=None, handle_signals=False,
                                    shutdown_timeout=1.0, handler_cancellation=True,
                                    auto_decompress=False,
                                    keepalive_timeout=self.line_timeout,
                                    logger=server_log)
        await self.runner.setup()
        site = web.TCPSite(self.runner, host.strip("[]"), int(port), ssl_context=context,
                           backlog=1024, reuse_address=True)
        await site.start()
        server = getattr(site, "_server", None)
        bound = server.sockets[0].getsockname()[:2] if server and server.sockets else (host,
                                                                                      port)
        self.address = "{}:{}".format(*bound)
        return self.address

    async def close(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None

    # -- what every route shares ------------------------------------------------------------

    @web.middleware
    async def _guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        origin = request.headers.get("Origin")
        if origin is not None and not self.origins.allows(origin):
            return json_error(403, f"Forbidden: origin {origin[:200]!r} is not in "
                                   "[listen] http_origins")
        if request.headers.get("Content-Encoding", "identity").lower() != "identity":
            return json_error(415, "Unsupported Media Type: send the body without "
                                   "Content-Encoding (compressed bodies are not accepted)",
                              headers={"Accept-Encoding": "identity"})
        try:
            # a body still arriving is read here, so that a trickled one is cut off too
            # (a whole one, the usual case, costs no timer)
            if request.body_exists and not request.content.is_eof():
                try:
                    async with asyncio.timeout(self.line_timeout):
                        await request.read()  # kept: the route's read() returns it
                except TimeoutError:
                    return json_error(408, "Request Timeout: the body did not arrive "
                                           f"within [listen] line_timeout ({self.line_timeout}"
                                           " s)", headers={"Connection": "close"})
            return await handler(request)
        except web.HTTPException as exc:
            if exc.content_type == "application/json":
                raise
            if exc.status == 413:
                return json_error(413, "Request body larger than [listen] "
                                       f"max_message_bytes ({self.max_bytes} bytes)")
            return json_error(exc.status, exc.reason, headers={
                k: v for k, v in exc.headers.items() if k.lower() in ("allow",
                                                                        "www-authenticate")})

    def agent(self, request: web.Request, token: str | None = None) -> Agent:
        """The agent a request's bearer token (or ``token``) names; else 401."""
        token = token if token is not None else bearer_token(request)
        if token is None:
            raise Unauthenticated("Unauthenticated: send Authorization: Bearer <agent token>")
        agent = self.board.auth.agent_for(token)
        if agent is None:
            raise Unauthenticated("Unauthenticated: the bearer token is not valid")
        return agent

    async def healthz(self, _request: web.Request) -> web.Response:
        state = self.health()
        return json_response({"health": state["health"], "reasons": state["reasons"]},
                             200 if state["serving"] else 503)
