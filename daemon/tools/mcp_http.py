"""A dual-era MCP client for an upstream server that speaks MCP over Streamable HTTP.

The same interface as daemon.tools.mcp_stdio.StdioMcpClient, so that the upstream worker
serves either.  One aiohttp ClientSession (keep-alive) per upstream.

Era: ``server/discover`` first (2026-07-28: every POST carries ``MCP-Protocol-Version``,
``Mcp-Method`` and, for a tool call, ``Mcp-Name``, and its ``_meta`` the version and client
capabilities); on any JSON-RPC or HTTP error, the 2025-11-25 ``initialize`` handshake,
whose ``Mcp-Session-Id`` rides on every later request.  A 404 for that session means the
server forgot it (it restarted): the client initializes again and resends, once.  In the
handshake era the server's GET event stream is kept open when it offers one, for
``notifications/tools/list_changed``.

Answers come as JSON or as an event stream (daemon.tools.sse_events); notifications on a
call's stream (progress, log messages) go to ``on_notification``, and the server's
requests there (sampling, elicitation, roots/list: handshake era only) to ``on_request``,
both with the call they came with; its answer is POSTed back.  What comes on the GET
stream is tied to no call (SDK servers send requests there unless told the related
request): it goes to the call in flight when there is exactly one, as over stdio.  A
cancelled call closes its stream, and in the handshake era also sends
``notifications/cancelled`` (the 2026-07-28 wire has no client notifications: the closed
stream is the signal).

"Exited", for an HTTP server, means unreachable: after a connection failure (or an idle
spell, every PROBE_EVERY seconds) the client pings it; PROBE_ATTEMPTS failed pings in a
row set ``exited``, and the worker exits so that its supervisor restarts it, exactly as
when a stdio server dies.  The configured headers are secrets: never logged, never part
of an error.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Callable, Coroutine
from functools import partial
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import msgspec
import orjson

from daemon.protocol import mcp
from daemon.protocol.jsonrpc import (
    INTERNAL_ERROR,
    METHOD_NOT_FOUND,
    TIMED_OUT,
    TOOL_UNAVAILABLE,
    RpcError,
)
from daemon.tools.mcp_calls import (
    CLIENT_INFO,
    Asker,
    discover,
    error_answer,
    initialize,
    list_all,
    modern_params,
    reply_to_server,
    server_request_answer,
    tool_call_params,
)
from daemon.tools.mcp_stdio import HANDSHAKE_TIMEOUT, MAX_MESSAGE_BYTES
from daemon.tools.sse_events import EventTooLarge, SseEvents

log = logging.getLogger("upstream")
PROBE_EVERY = 5.0  # seconds without a word from the server before it is pinged
PROBE_ATTEMPTS = 3  # failed pings in a row: unreachable
PROBE_GAP = 0.5  # seconds between those pings
READ_CHUNK = 1 << 16
ACCEPT = "application/json, text/event-stream"
_UNREACHABLE = (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError)


class _Message(msgspec.Struct):
    id: Any = msgspec.UNSET
    method: Any = msgspec.UNSET
    params: Any = None
    result: msgspec.Raw = msgspec.Raw()
    error: Any = msgspec.UNSET


_read_message = msgspec.json.Decoder(_Message).decode


_UNRELATED = object()  # what _on_message is told of a message on the GET stream


class Unreachable(RpcError):
    """The server could not be reached, or dropped the connection mid-answer."""


class _SessionGone(Exception):
    """404 for our Mcp-Session-Id: the server no longer knows the session."""


def shown_url(url: str) -> str:
    """The URL as logs may show it: no user, password or query (they may hold secrets)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}{f':{parts.port}' if parts.port else ''}" \
           f"{parts.path}"


def header_value(value: str) -> str:
    """An Mcp-Name value as the spec encodes it: printable ASCII as is, else base64."""
    if value.isascii() and value.isprintable() and value == value.strip() \
            and not value.startswith("=?base64?"):
        return value
    import base64

    return f"=?base64?{base64.b64encode(value.encode()).decode()}?="


class HttpMcpClient:
    def __init__(self, name: str, url: str, headers: dict[str, str], timeout: float = 30.0,
                 on_notification: Callable[[dict[str, Any], Any], None] | None = None,
                 on_request: Asker | None = None) -> None:
        self.name = name
        self.url = url
        self.timeout = timeout
        self.on_notification = on_notification  # (message, the call it came with or None)
        self.on_request = on_request
        self.on_session: Callable[[], None] | None = None  # a new session replaced ours
        self.modern = False
        self.protocol = "auto"  # [upstreams.NAME] protocol: which eras the handshake tries
        self.version = ""
        self.capabilities: dict[str, Any] = {}  # what the server said it offers
        self.asked = ""  # the method of the last request() (what a start timeout names)
        self.session_id: str | None = None
        self.exited = asyncio.Event()
        self._headers = {**headers, "Accept": ACCEPT, "Content-Type": "application/json"}
        self._ids = itertools.count(1)
        self._http: aiohttp.ClientSession | None = None
        self._last_heard = time.monotonic()
        self._renewing = asyncio.Lock()
        self._probe: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()  # owned: cancelled and awaited at close
        self._calls: dict[int, Any] = {}  # request id -> the call it serves, while in flight

    # -- life ----------------------------------------------------------------------------

    async def start(self) -> None:
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(
            total=None, sock_connect=self.timeout), auto_decompress=True)
        async with asyncio.timeout(HANDSHAKE_TIMEOUT):
            await self._handshake()
        self._spawn(self._watch())
        if not self.modern:
            self._spawn(self._listen())

    async def _handshake(self) -> None:
        found = await discover(partial(self._request, modern=True), self.protocol,
                               Unreachable)
        if found is None:
            await self._initialize()
        else:
            self.modern, self.version = True, mcp.STATELESS_VERSIONS[-1]
            self.capabilities = found

    async def _initialize(self) -> None:
        self.version, self.capabilities = await initialize(
            partial(self._request, modern=False), self.notify)

    async def close(self, timeout: float = 3.0) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._http is None:
            return
        if self.session_id is not None and not self.exited.is_set():
            try:  # end the session, as the spec asks of a client that leaves
                async with asyncio.timeout(min(timeout, self.timeout)):
                    async with self._http.delete(self.url, headers=self._era_headers(
                            "", None, False), allow_redirects=False):
                        pass
            except (aiohttp.ClientError, TimeoutError):
                pass
        await self._http.close()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # -- liveness ------------------------------------------------------------------------

    async def _watch(self) -> None:
        """Ping a server that has been silent for PROBE_EVERY seconds."""
        while not self.exited.is_set():
            await asyncio.sleep(PROBE_EVERY - (time.monotonic() - self._last_heard))
            if time.monotonic() - self._last_heard >= PROBE_EVERY:
                await self._checked()

    def _suspect(self) -> None:
        """A connection failed: find out now whether the server is still there."""
        if self._probe is None or self._probe.done():
            self._probe = self._spawn(self._check())

    async def _checked(self) -> None:
        """The check under way, or a new one, awaited (one at a time)."""
        self._suspect()
        assert self._probe is not None
        await asyncio.shield(self._probe)

    async def _check(self) -> None:
        for attempt in range(PROBE_ATTEMPTS):
            if attempt:
                await asyncio.sleep(PROBE_GAP)
            try:
                if self.modern:
                    await self._request("server/discover", {}, modern=True)
                else:
                    await self._request("ping", {}, modern=False)
                return
            except Unreachable:
                continue
            except RpcError:
                return  # it answered: there
        if not self.exited.is_set():
            log.warning("%s: the server at %s is unreachable", self.name,
                        shown_url(self.url))
            self.exited.set()

    async def _listen(self) -> None:
        """The handshake era's GET stream, kept open while the server offers it."""
        assert self._http is not None
        while not self.exited.is_set():
            session = self.session_id
            try:
                async with self._http.get(self.url, headers=self._era_headers(
                        "", None, False), allow_redirects=False) as response:
                    if response.status == 404 and session is not None:
                        await self._renew(session)
                        continue
                    kind = response.headers.get("Content-Type", "").partition(";")[0]
                    if response.status != 200 or kind.strip() != "text/event-stream":
                        return  # it offers none (405), or not one we can read
                    self._last_heard = time.monotonic()
                    events = SseEvents(MAX_MESSAGE_BYTES)
                    async for chunk in response.content.iter_chunked(READ_CHUNK):
                        self._last_heard = time.monotonic()
                        for data in events.feed(chunk):
                            self._on_message(data, _UNRELATED)
            except EventTooLarge:
                log.error("%s: refused an event of over %d bytes on the server's stream",
                          self.name, MAX_MESSAGE_BYTES)
            except (aiohttp.ClientError, RpcError):
                pass
            await self._checked()  # the stream ended: did the server go?
            await asyncio.sleep(PROBE_GAP)

    # -- requests ------------------------------------------------------------------------

    async def notify(self, method: str, params: dict[str, Any] | None = None) -> None:
        message: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
        if params is not None:
            message["params"] = params
        await self._post_only(orjson.dumps(message), method)

    async def _post_only(self, body: bytes, method: str) -> None:
        """A notification or a reply: the server answers 202, with no body."""
        assert self._http is not None
        try:
            async with asyncio.timeout(self.timeout):
                async with self._http.post(self.url, data=body, headers=self._era_headers(
                        method, None, self.modern), allow_redirects=False) as response:
                    if response.status >= 300:
                        log.info("%s: the server refused a %s (HTTP %d)", self.name, method,
                                 response.status)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise Unreachable(TOOL_UNAVAILABLE, "Tool unavailable: the upstream server is "
                                                f"unreachable ({exc.__class__.__name__})") \
                from None

    async def request(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        self.asked = method
        return await self._request(method, params, self.modern)

    async def request_raw(self, method: str, params: bytes, route: Any = None) -> bytes:
        """Any request, its ``params`` a JSON object's bytes (sent as they are but for the
        era's ``_meta``); the result's bytes as the server wrote them (b"{}" for none).
        No timeout here: the gateway's call timeout cancels it."""
        self.asked = method
        name = None
        if self.modern:
            params = modern_params(params)
            if method in mcp.NAMED_BY:  # the 2026-07-28 Mcp-Name header
                found = orjson.loads(params).get(mcp.NAMED_BY[method])
                name = found if isinstance(found, str) else None
        return await self._exchange(method, params, name, self.modern, route) or b"{}"

    async def _request(self, method: str, params: dict[str, Any],
                       modern: bool) -> dict[str, Any]:
        if modern:
            params = {**params, "_meta": {**params.get("_meta", {}),
                                          **mcp.stateless_meta(CLIENT_INFO)}}
        try:
            async with asyncio.timeout(self.timeout):
                raw = await self._exchange(method, orjson.dumps(params), None, modern)
        except TimeoutError:
            raise RpcError(TIMED_OUT, f"upstream error: no answer to {method} within "
                                      f"{self.timeout:g}s") from None
        result = orjson.loads(raw) if raw else None
        if result is not None and not isinstance(result, dict):
            raise RpcError(INTERNAL_ERROR, f"upstream error: its {method} result is not an "
                                           "object")
        return result or {}

    async def list_all(self, method: str, key: str) -> list[dict[str, Any]]:
        return await list_all(self.request, method, key)

    async def list_tools(self) -> list[dict[str, Any]]:
        return await self.list_all("tools/list", "tools")

    async def call_tool(self, name: str, arguments: bytes,
                        progress_token: str | None = None, route: Any = None) -> bytes:
        """``arguments``: a JSON object's bytes, spliced in as they are; the result's
        bytes as the server sent them (b"{}" for none).  No timeout here: the gateway's
        call timeout cancels the call."""
        params = tool_call_params(name, arguments, progress_token, self.modern)
        return await self._exchange("tools/call", params, name, self.modern, route) or b"{}"

    def _era_headers(self, method: str, name: str | None, modern: bool) -> dict[str, str]:
        headers = dict(self._headers)
        if modern:
            headers["MCP-Protocol-Version"] = mcp.STATELESS_VERSIONS[-1]
            if method:
                headers["Mcp-Method"] = method
            if name is not None:
                headers["Mcp-Name"] = header_value(name)
            return headers
        if self.session_id is not None:
            headers["Mcp-Session-Id"] = self.session_id
        if self.version and method != "initialize":
            headers["MCP-Protocol-Version"] = self.version
        return headers

    async def _exchange(self, method: str, params: bytes, name: str | None,
                        modern: bool, route: Any = None) -> bytes:
        """POST a request whose ``params`` are JSON bytes; its result's bytes (b"" for
        none), or its error raised.  A forgotten session is renewed and the request
        sent again, once."""
        if self.exited.is_set():
            raise Unreachable(TOOL_UNAVAILABLE, "Tool unavailable: the upstream server is "
                                                "unreachable")
        rid = next(self._ids)
        body = b'{"jsonrpc":"2.0","id":%d,"method":%b,"params":%b}' % (
            rid, orjson.dumps(method), params)
        if route is not None:
            self._calls[rid] = route
        try:
            for again in (False, True):
                session = self.session_id
                try:
                    return await self._post(rid, method, body, name, modern, route)
                except _SessionGone:
                    if again or method == "initialize":
                        break
                    await self._renew(session)
        finally:
            if route is not None:
                del self._calls[rid]
        raise RpcError(TOOL_UNAVAILABLE, "Tool unavailable: the upstream server refused "
                                         "a new session too")

    async def _renew(self, stale: str | None) -> None:
        async with self._renewing:
            if self.session_id != stale:
                return  # another request renewed it already
            log.info("%s: the server forgot our session; initializing again", self.name)
            self.session_id, self.version = None, ""
            await self._initialize()
        if self.on_session is not None:
            self.on_session()  # what the old session subscribed to, the new one must

    async def _post(self, rid: int, method: str, body: bytes, name: str | None,
                    modern: bool, route: Any = None) -> bytes:
        assert self._http is not None
        headers = self._era_headers(method, name, modern)
        sent_session = headers.get("Mcp-Session-Id")
        try:
            async with self._http.post(self.url, data=body, headers=headers,
                                       allow_redirects=False) as response:
                self._last_heard = time.monotonic()
                if response.status == 404 and sent_session is not None:
                    raise _SessionGone
                if method == "initialize" and "Mcp-Session-Id" in response.headers:
                    self.session_id = response.headers["Mcp-Session-Id"]
                return await self._answer(response, rid, method, route)
        except asyncio.CancelledError:
            if not modern and not self.exited.is_set():  # the 2026 wire: closing is enough
                self._spawn(self._cancel_upstream(rid))
            raise
        except aiohttp.ClientConnectorError as exc:  # it never reached the server
            self._suspect()
            raise Unreachable(TOOL_UNAVAILABLE, "Tool unavailable: the upstream server is "
                                                f"unreachable ({exc.__class__.__name__})") \
                from None
        except _UNREACHABLE as exc:
            self._suspect()
            raise Unreachable(TOOL_UNAVAILABLE, "Tool unavailable: lost the upstream "
                              f"server during the call ({exc.__class__.__name__}); its "
                              "outcome is unknown") from None

    async def _cancel_upstream(self, rid: int) -> None:
        body = orjson.dumps({"jsonrpc": "2.0", "method": "notifications/cancelled",
                             "params": {"requestId": rid, "reason": "cancelled"}})
        await self._post_quietly(body, "notifications/cancelled")

    async def _answer(self, response: aiohttp.ClientResponse, rid: int, method: str,
                      route: Any = None) -> bytes:
        if 300 <= response.status < 400:
            raise self._redirected(response)
        kind = response.headers.get("Content-Type", "").partition(";")[0].strip().lower()
        if kind == "application/json":
            body = await self._read_bounded(response)
            try:
                message = _read_message(body)
            except msgspec.DecodeError:
                message = None
            if message is not None and (response.status < 400 or isinstance(message.error,
                                                                             dict)):
                return self._result(message, method)
            if response.status < 400:
                raise RpcError(INTERNAL_ERROR, f"upstream error: HTTP {response.status}, "
                                               "and its body is not JSON-RPC")
        if response.status >= 400:
            raise self._refused(response)
        if kind != "text/event-stream":
            raise RpcError(INTERNAL_ERROR, f"upstream error: HTTP {response.status} with "
                                           f"no answer (content type {kind or 'none'!r})")
        events = SseEvents(MAX_MESSAGE_BYTES)
        try:
            async for chunk in response.content.iter_chunked(READ_CHUNK):
                self._last_heard = time.monotonic()
                for data in events.feed(chunk):
                    message = self._on_message(data, route)
                    if message is not None and message.id == rid:
                        return self._result(message, method)
        except EventTooLarge:
            log.error("%s: refused a message of over %d bytes (the answer to request %d)",
                      self.name, MAX_MESSAGE_BYTES, rid)
            raise RpcError(INTERNAL_ERROR, "upstream error: its answer is over "
                                           f"{MAX_MESSAGE_BYTES} bytes; refused") from None
        self._suspect()
        raise Unreachable(TOOL_UNAVAILABLE, "Tool unavailable: the upstream server ended "
                                            "the call's stream without an answer; its "
                                            "outcome is unknown")

    def _redirected(self, response: aiohttp.ClientResponse) -> RpcError:
        """Redirects are never followed: the upstream's headers (its key) and the call
        go to ``url`` only, not wherever a server (or whoever took it over) points."""
        location = response.headers.get("Location", "")
        where = shown_url(location) if location.startswith(("http://", "https://")) \
            else location[:200] or "nowhere"
        log.error("%s: the server redirected (HTTP %d to %s); not followed: set the "
                  "upstream's url to the final URL", self.name, response.status, where)
        return RpcError(INTERNAL_ERROR, f"upstream error: HTTP {response.status} redirect "
                                        f"to {where}, not followed (set the upstream's url "
                                        "to the final URL)")

    @staticmethod
    def _refused(response: aiohttp.ClientResponse) -> RpcError:
        status = response.status
        code = METHOD_NOT_FOUND if status in (404, 405) else INTERNAL_ERROR
        hint = " (the server refused our credentials: see headers_env)" \
            if status in (401, 403) else ""
        return RpcError(code, f"upstream error: HTTP {status} {response.reason or ''}"
                              .rstrip() + hint)

    async def _read_bounded(self, response: aiohttp.ClientResponse) -> bytes:
        body = bytearray()
        async for chunk in response.content.iter_chunked(READ_CHUNK):
            body += chunk
            if len(body) > MAX_MESSAGE_BYTES:
                log.error("%s: refused a message of over %d bytes", self.name,
                          MAX_MESSAGE_BYTES)
                raise RpcError(INTERNAL_ERROR, "upstream error: its answer is over "
                                               f"{MAX_MESSAGE_BYTES} bytes; refused")
        return bytes(body)

    @staticmethod
    def _result(message: _Message, method: str) -> bytes:
        if message.error is not msgspec.UNSET:
            raise error_answer(message.error)
        if message.method is not msgspec.UNSET:
            raise RpcError(INTERNAL_ERROR, f"upstream error: its answer to {method} is "
                                           "not a response")
        return bytes(message.result)

    def _on_message(self, data: bytes, route: Any = None) -> _Message | None:
        """One message from a stream: a response is returned for the caller to match;
        a notification goes to the callback; a request from the server is answered (by
        the agent of the call whose stream it came on, ``route``)."""
        try:
            message = _read_message(data)
        except msgspec.DecodeError:
            log.warning("%s: ignored an event that is not a JSON-RPC object", self.name)
            return None
        if message.method is msgspec.UNSET:
            return message
        if route is _UNRELATED:  # the GET stream: the one call in flight, if only one
            route = None
            if message.id is not msgspec.UNSET or message.method == "notifications/message":
                routes = {id(r): r for r in self._calls.values()}
                route = next(iter(routes.values())) if len(routes) == 1 else None
        if message.id is msgspec.UNSET:
            if self.on_notification is not None:
                self.on_notification({"jsonrpc": "2.0", "method": message.method,
                                      "params": message.params}, route)
        elif not self.modern:  # 2026-07-28 has none: its servers ask by input_required
            self._spawn(self._answer_server(message, route))
        return None

    async def _answer_server(self, message: _Message, route: Any) -> None:
        answer = await server_request_answer(self.on_request, message.method,
                                             message.params, route)
        await self._post_quietly(reply_to_server(message.id, answer), "")

    async def _post_quietly(self, body: bytes, method: str) -> None:
        """A cancellation or a reply: if the server is gone, nothing is left to tell."""
        with contextlib.suppress(RpcError):
            await self._post_only(body, method)
