"""What one MCP Streamable HTTP request holds: an exchange (one POSTed JSON-RPC request
and its answer) and a session (the handshake era's ``Mcp-Session-Id``).

An exchange is a switchboard Connection of its own, never attached: the switchboard
answers it once through ``send`` (that answer ends the HTTP response) and streams what
comes before the answer (progress) through ``progress``.  Both are called from the
event loop's callbacks, so they only record and wake the handler that writes.

A session is a Connection attached to the switchboard, so ``notify_agents`` and the idle
sweep reach it; what it is sent goes to the session's ``GET /mcp`` stream, if one is
open.  Its calls run on their exchanges, which it tracks for the in-flight cap and for
``notifications/cancelled``.
"""

from __future__ import annotations

import asyncio
import secrets
from collections import deque
from collections.abc import Callable

from daemon.front.auth import Agent
from daemon.front.switchboard import Connection, Switchboard
from daemon.protocol import jsonrpc

STREAM_BACKLOG = 1000  # notifications a GET stream may fall behind by before it is cut
# What a call may stream (progress, log messages, an upstream's requests) ahead of a client
# that does not read its response: past this, more is dropped (a dropped request of the
# upstream's is answered -32603 when the call ends), so the master's memory stays bounded
STREAMED_MAX = 16 << 20


def sse_event(raw: bytes) -> bytes:
    """One JSON-RPC message as an SSE event (orjson output has no newlines)."""
    return b"event: message\ndata: " + raw + b"\n\n"


class Exchange:
    """One POSTed request: its answer, and what the call streamed before it."""

    __slots__ = ("_loop", "_waiter", "answer", "cancelled", "conn", "dropped", "held",
                 "streamed")

    def __init__(self, agent: Agent | None) -> None:
        self._loop = asyncio.get_running_loop()
        self._waiter: asyncio.Future[None] | None = None
        self.answer: bytes | None = None
        self.streamed: deque[bytes] = deque()
        self.held = 0  # bytes in ``streamed`` (the writer subtracts what it writes)
        self.dropped = 0  # messages dropped at STREAMED_MAX
        self.cancelled = False  # the client sent notifications/cancelled for it
        self.conn = Connection(self._send, self.cancel, "http", progress=self._progress)
        self.conn.agent = agent
        self.conn.hears_broadcasts = False  # a listen stream gets only what it asked for

    def _send(self, raw: bytes) -> None:
        if self.answer is None:
            self.answer = raw
            self._wake()

    def _progress(self, raw: bytes) -> None:
        if self.answer is None:
            if self.held + len(raw) > STREAMED_MAX:
                self.dropped += 1
                return
            self.held += len(raw)
            self.streamed.append(raw)
            self._wake()

    def take_streamed(self) -> list[bytes]:
        """What was streamed since the last take, for the writer."""
        taken = list(self.streamed)
        self.streamed.clear()
        self.held = 0
        return taken

    def cancel(self) -> None:
        """The client gave up on the call: the response ends with no answer."""
        self.cancelled = True
        self._wake()

    @property
    def finished(self) -> bool:
        return self.answer is not None or self.cancelled

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def wait(self) -> None:
        """Until there is an answer, something streamed, or a cancellation."""
        if self.finished or self.streamed:
            return
        self._waiter = self._loop.create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None


class Session:
    """A handshake-era MCP session: its agent, its calls, and its GET stream."""

    def __init__(self, board: Switchboard, agent: Agent, version: str,
                 on_end: Callable[[Session], None]) -> None:
        self.id = secrets.token_urlsafe(32)  # unguessable: it stands for the token
        self.board = board
        self.version = version
        self.exchanges: dict[jsonrpc.RequestId, Exchange] = {}
        self.stream: asyncio.Queue[bytes | None] | None = None  # the open GET stream
        self.ended = False
        self._on_end = on_end
        self.conn = Connection(self._notify, self.end, "http")
        self.conn.agent = agent
        board.attach(self.conn)

    @property
    def agent(self) -> Agent | None:
        return self.conn.agent

    def _notify(self, raw: bytes) -> None:
        stream = self.stream
        if stream is None:
            return  # no GET stream: the spec lets a server drop what it cannot send
        if stream.qsize() >= STREAM_BACKLOG:
            self.close_stream()  # a reader this far behind is gone; the client reopens it
            return
        stream.put_nowait(sse_event(raw))

    def open_stream(self) -> asyncio.Queue[bytes | None]:
        """A new GET stream replaces the previous one (a client reconnecting)."""
        self.close_stream()
        self.stream = asyncio.Queue()
        return self.stream

    def close_stream(self) -> None:
        if self.stream is not None:
            self.stream.put_nowait(None)
            self.stream = None

    def end(self) -> None:
        """DELETE, the idle sweep, or shutdown: its calls are cancelled, its stream ends."""
        if self.ended:
            return
        self.ended = True
        self.board.detach(self.conn)
        for exchange in list(self.exchanges.values()):
            self.board.detach(exchange.conn)
            exchange.cancel()
        self.exchanges.clear()
        self.close_stream()
        self._on_end(self)
