"""`workingagents mcp-bridge`: a stdio MCP server that forwards to the daemon.

Any standard MCP client (an IDE, Claude Desktop, the `mcp` SDK) launches it as a stdio
server.  Each line from stdin goes to the daemon's TCP shim with the caller's token added
to ``params._meta`` (so both the handshake and the stateless era authenticate); each line
from the daemon goes to stdout unchanged.  Logs go to stderr, as MCP's stdio transport
requires.  The bridge exits when stdin closes.

The daemon may restart under an IDE that keeps its session for days, so the bridge
outlives the daemon's connection: it reconnects with capped backoff (one stderr line per
attempt), finding the daemon's address and the admin token anew each time, and replays
the client's ``initialize`` and resource subscriptions (their answers swallowed) so that
the client never notices.
Calls in flight when the connection dropped answer -32014 (their outcome is unknown);
requests that arrive while it is down wait for the reconnection, or answer -32015 once the
daemon has been away for ``deadline`` seconds.  Nothing hangs.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import sys
import time
from collections.abc import Callable
from typing import Any, BinaryIO

import orjson

from daemon.protocol.jsonrpc import TOOL_UNAVAILABLE, WORKER_CRASHED
from daemon.protocol.mcp import META_TOKEN

log = logging.getLogger("mcp-bridge")
LINE_LIMIT = 1 << 24
DEADLINE = 30.0  # seconds a request waits for a daemon that is away
BACKOFF_INITIAL, BACKOFF_MAX = 0.1, 2.0
REPLAY_TIMEOUT = 10.0  # for the daemon to answer the replayed initialize
REPLAYED = "wa-bridge-replay-"  # the ids of the bridge's own requests
RESUBSCRIBE_GAP = 0.5  # seconds between tries to subscribe again to a resource
# (host, port, token) of the running daemon; raises OSError while there is none
Locate = Callable[[], tuple[str, int, str]]


def with_token(line: bytes, token: str) -> bytes:
    """The same message, with the token in params._meta; non-JSON passes through as is
    (the daemon answers it with the right error)."""
    try:
        message: Any = orjson.loads(line)
    except orjson.JSONDecodeError:
        return line
    if not isinstance(message, dict) or not isinstance(message.get("method"), str):
        return line
    params = message.get("params")
    if params is None:
        params = message["params"] = {}
    if not isinstance(params, dict):
        return line
    meta = params.get("_meta")
    if meta is None:
        meta = params["_meta"] = {}
    if isinstance(meta, dict):
        meta[META_TOKEN] = token
    return orjson.dumps(message)


def _request_id(message: Any) -> bytes | None:
    """A request's id as JSON bytes (ids may be numbers or strings), else None."""
    if isinstance(message, dict) and isinstance(message.get("method"), str) \
            and "id" in message:
        return orjson.dumps(message["id"])
    return None


class Bridge:
    def __init__(self, locate: Locate, out: BinaryIO, deadline: float = DEADLINE) -> None:
        self.locate = locate
        self.out = out
        self.deadline = deadline
        self.token = ""
        self.writer: asyncio.StreamWriter | None = None
        self.reader: asyncio.StreamReader | None = None
        self.initialize: bytes | None = None  # the client's, replayed on reconnection
        self.initialized = False
        self.subscribed: set[str] = set()  # resources the client subscribed to: replayed
        self.in_flight: set[bytes] = set()  # request ids the daemon has and owes
        self.waiting: list[tuple[bytes | None, bytes]] = []  # (id, line) while away
        self.away_since: float | None = None
        self._replays = itertools.count(1)

    # -- the client's side --------------------------------------------------------------

    def answer_error(self, rid: bytes, code: int, message: str) -> None:
        self.out.write(b'{"jsonrpc":"2.0","id":%b,"error":%b}\n' % (
            rid, orjson.dumps({"code": code, "message": message})))
        self.out.flush()

    async def from_client(self, stdin: asyncio.StreamReader) -> None:
        while line := await stdin.readline():
            line = line.rstrip(b"\r\n")
            if not line.strip():
                continue
            try:
                message: Any = orjson.loads(line)
            except orjson.JSONDecodeError:
                message = None
            rid = _request_id(message)
            if isinstance(message, dict):
                if message.get("method") == "initialize":
                    self.initialize, self.initialized = line, False
                elif message.get("method") == "notifications/initialized":
                    self.initialized = True
                self._track_subscription(message)
            if self.writer is not None:
                await self.send(rid, line)
            elif rid is not None and self.away_since is not None \
                    and time.monotonic() - self.away_since > self.deadline:
                self.answer_error(rid, TOOL_UNAVAILABLE, self._away_message())
            elif rid is not None:
                self.waiting.append((rid, line))
            # a notification while away (a cancel, say) concerns a call already failed

    def _track_subscription(self, message: dict[str, Any]) -> None:
        params = message.get("params")
        uri = params.get("uri") if isinstance(params, dict) else None
        if isinstance(uri, str) and message.get("method") == "resources/subscribe":
            self.subscribed.add(uri)
        elif isinstance(uri, str) and message.get("method") == "resources/unsubscribe":
            self.subscribed.discard(uri)

    async def send(self, rid: bytes | None, line: bytes) -> None:
        assert self.writer is not None
        if rid is not None:
            self.in_flight.add(rid)
        self.writer.write(with_token(line, self.token) + b"\n")
        with contextlib.suppress(ConnectionError):  # the reader sees the loss, and fails
            await self.writer.drain()              # what is in flight

    def _away_message(self) -> str:
        return (f"the WorkingAgents daemon is unreachable (for over {self.deadline:g}s); "
                "the bridge keeps reconnecting: retry later")

    # -- the daemon's side --------------------------------------------------------------

    async def connect(self) -> None:
        host, port, self.token = self.locate()
        self.reader, writer = await asyncio.open_connection(host, port, limit=LINE_LIMIT)
        try:
            if self.initialize is not None:
                await self._replay(writer)
        except BaseException:
            writer.close()
            raise
        self.writer = writer

    async def _replay(self, writer: asyncio.StreamWriter) -> None:
        """The client's handshake again, on the new connection, its answer swallowed."""
        assert self.reader is not None and self.initialize is not None
        message = orjson.loads(self.initialize)
        own = f"{REPLAYED}{next(self._replays)}"
        message["id"] = own
        writer.write(with_token(orjson.dumps(message), self.token) + b"\n")
        await writer.drain()
        async with asyncio.timeout(REPLAY_TIMEOUT):
            while True:
                line = await self.reader.readline()
                if not line:
                    raise ConnectionResetError("closed during the handshake")
                answer = orjson.loads(line)
                if isinstance(answer, dict) and answer.get("id") == own:
                    break
        if "error" in answer:
            raise ConnectionRefusedError(f"the daemon refused the handshake: "
                                         f"{answer['error'].get('message')}")
        if self.initialized:
            writer.write(b'{"jsonrpc":"2.0","method":"notifications/initialized"}\n')
        await writer.drain()
        await self._resubscribe(writer)

    async def _resubscribe(self, writer: asyncio.StreamWriter) -> None:
        """The client's resource subscriptions, on the new connection, before its next
        request goes out.  One the daemon does not know yet (its upstream is starting)
        is asked for again, until REPLAY_TIMEOUT; then given up, with a log line."""
        assert self.reader is not None
        left = sorted(self.subscribed)
        owed: dict[Any, str] = {}
        try:
            async with asyncio.timeout(REPLAY_TIMEOUT):
                while left:
                    for uri in left:
                        owed[own := f"{REPLAYED}{next(self._replays)}"] = uri
                        writer.write(with_token(orjson.dumps({
                            "jsonrpc": "2.0", "id": own, "method": "resources/subscribe",
                            "params": {"uri": uri}}), self.token) + b"\n")
                    await writer.drain()
                    left = []
                    while owed:
                        line = await self.reader.readline()
                        if not line:
                            raise ConnectionResetError("closed while subscribing again")
                        answer = orjson.loads(line)
                        uri = owed.pop(answer.get("id"), "") if isinstance(answer, dict) \
                            and isinstance(answer.get("id"), str) else ""
                        if not uri:  # an update already: the client's
                            self.out.write(line)
                            self.out.flush()
                        elif "error" in answer:
                            left.append(uri)
                    if left:
                        await asyncio.sleep(RESUBSCRIBE_GAP)
        except TimeoutError:
            missing = ", ".join(sorted({*left, *owed.values()}))
            log.warning("could not subscribe again to %s after reconnecting; the client "
                        "will not hear of their updates", missing)

    async def from_daemon(self) -> None:
        assert self.reader is not None
        while line := await self.reader.readline():
            try:
                message: Any = orjson.loads(line)
                if isinstance(message, dict) and "method" not in message:
                    self.in_flight.discard(orjson.dumps(message.get("id")))
            except orjson.JSONDecodeError:
                pass
            self.out.write(line)
            self.out.flush()

    def lost(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.writer = self.reader = None
        self.away_since = time.monotonic()
        for rid in sorted(self.in_flight):
            self.answer_error(rid, WORKER_CRASHED, "the connection to the WorkingAgents "
                              "daemon was lost during the call; its outcome is unknown")
        self.in_flight.clear()

    async def reconnect(self) -> None:
        delay = BACKOFF_INITIAL
        attempt = 0
        while True:
            attempt += 1
            try:
                await self.connect()
                break
            except (OSError, TimeoutError, ValueError) as exc:
                self._expire()
                log.warning("the daemon is unreachable (%s); attempt %d, next in %.1fs",
                            exc.__class__.__name__ if isinstance(exc, OSError | TimeoutError)
                            else exc, attempt, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, BACKOFF_MAX)
        log.warning("reconnected to the daemon after %d attempts", attempt)
        self.away_since = None
        waiting, self.waiting = self.waiting, []
        for rid, line in waiting:
            await self.send(rid, line)

    def _expire(self) -> None:
        """Requests that have waited out the deadline answer now."""
        if self.away_since is None or time.monotonic() - self.away_since <= self.deadline:
            return
        for rid, _ in self.waiting:
            if rid is not None:
                self.answer_error(rid, TOOL_UNAVAILABLE, self._away_message())
        self.waiting.clear()

    async def to_daemon(self) -> None:
        while True:
            await self.from_daemon()
            self.lost()
            log.warning("the daemon closed the connection; reconnecting")
            await self.reconnect()


async def bridge(locate: Locate, deadline: float = DEADLINE) -> int:
    """Serve stdin/stdout until stdin closes; the first connection must succeed."""
    loop = asyncio.get_running_loop()
    stdin = asyncio.StreamReader(limit=LINE_LIMIT)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    link = Bridge(locate, sys.stdout.buffer, deadline)
    await link.connect()
    daemon = asyncio.create_task(link.to_daemon())
    try:
        await link.from_client(stdin)
    finally:
        daemon.cancel()
        await asyncio.gather(daemon, return_exceptions=True)
        if link.writer is not None:
            link.writer.close()
    return 0
