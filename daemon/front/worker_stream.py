"""An HTTP response made of what a gateway worker sends for one request (ipc.messages'
LLM frames, which the AI and agent gateways share): a whole answer, or a stream's head,
its bytes as they arrive, and its end.

The master's own answers (busy, timed out, the worker died) arrive as JSON-RPC errors:
before the head they become the route's error response, after it an error event that
ends the stream, so a stream never just stops as if it were complete.  A stream is
written as the client reads it, and what the client took is given back to the worker
(Frames.credit), which reads its provider no faster: the AI gateway's worker keeps at
most ipc.messages.CREDIT_WINDOW bytes in flight per stream.  For a worker that does not
wait for credit (the agent gateway's) the master holds at most MAX_HELD bytes of a stream
for a slow client, then drops the request with an error event.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Any

import orjson
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

from daemon.front.switchboard import Connection
from daemon.ipc import messages
from daemon.ipc.messages import CREDIT_EVERY

# Bytes of a stream the master may hold for a client that reads more slowly than the
# worker writes; past it the request is dropped (an error event ends the stream)
MAX_HELD = 16 << 20
_STREAM_BYTES = (messages.LLM_DATA, messages.LLM_END)


class Frames:
    """What the worker sent for one request, until the route has written it out.

    ``credit``: where the bytes the client took are given back to the worker
    (Switchboard.credit), in steps of CREDIT_EVERY, for a worker that waits for them
    (gateway.stream_credit, in the worker); None for one that does not (it is cut off
    at MAX_HELD).

    No asyncio.Queue (its Event and deques cost more than the rest of a plain request
    here): a frame goes straight to the route's waiting future, and frames that arrive
    while the route is writing (a stream) wait in a deque made when the first one does."""

    __slots__ = ("_waiter", "_waiting", "conn", "credit", "held", "taken")

    def __init__(self, credit: Callable[[Connection, int], None] | None = None) -> None:
        self.held = 0
        self.credit = credit
        self.taken = 0  # written out, not yet given back
        self._waiter: asyncio.Future[tuple[bool, bytes]] | None = None
        self._waiting: deque[tuple[bool, bytes]] | None = None
        self.conn = Connection(self.last, _no_close, "http", self.more)

    def took(self, size: int) -> None:
        """The client took ``size`` bytes of the stream (they are in its socket)."""
        if self.credit is None:
            return
        self.taken += size
        if self.taken >= CREDIT_EVERY:
            self.credit(self.conn, self.taken)
            self.taken = 0

    def more(self, raw: bytes) -> None:
        self.held += len(raw)
        self._put((False, raw))

    def last(self, raw: bytes) -> None:
        self._put((True, raw))

    def _put(self, frame: tuple[bool, bytes]) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():  # done: the route was cancelled (the client left)
                waiter.set_result(frame)
                return
        if self._waiting is None:
            self._waiting = deque()
        self._waiting.append(frame)

    async def get(self) -> tuple[bool, bytes]:
        if self._waiting:
            last, raw = self._waiting.popleft()
        else:
            self._waiter = asyncio.get_running_loop().create_future()
            last, raw = await self._waiter
        if not last:
            self.held -= len(raw)
        return last, raw

    def has_data(self) -> bool:
        """Whether stream bytes are already here, waiting for the route."""
        waiting = self._waiting
        return waiting is not None and len(waiting) > 0 and waiting[0][1][:1] in _STREAM_BYTES

    def ready_data(self, limit: int = CREDIT_EVERY) -> list[tuple[bool, bytes]]:
        """The stream bytes (LLM_DATA, LLM_END frames) already here, taken in order up to
        the first other frame or about ``limit`` bytes, so that they leave in one write
        (one chunk, one send) rather than one per frame."""
        taken: list[tuple[bool, bytes]] = []
        waiting = self._waiting
        while waiting and limit > 0 and waiting[0][1][:1] in _STREAM_BYTES:
            last, raw = waiting.popleft()
            limit -= len(raw)
            if not last:
                self.held -= len(raw)
            taken.append((last, raw))
            if last:
                break
        return taken

    @property
    def overflowing(self) -> bool:
        return self.held > MAX_HELD


def _no_close() -> None:
    """An HTTP request's Connection has nothing of its own to close (aiohttp holds it)."""


# error (the JSON-RPC error object) -> the route's response, before the head is sent
Refusal = Callable[[dict[str, Any]], web.StreamResponse]
# error, or None for a client too slow to keep up -> the event that ends a stream
StreamError = Callable[[dict[str, Any] | None], bytes]


async def relay(request: web.Request, frames: Frames, refusal: Refusal,
                stream_error: StreamError) -> web.StreamResponse:
    """Write out the worker's answer; returns the response (the caller detaches the
    connection, which cancels the request in the worker if it is not over)."""
    last, frame = await frames.get()
    tag = frame[:1]
    if tag == messages.LLM_WHOLE:  # the usual answer: one frame, one write
        at = frame.find(b"\n")
        at = len(frame) if at < 0 else at  # a head alone: an empty body
        status, headers = _head(frame[1:at])
        return web.Response(body=frame[at + 1:], status=status, headers=headers)
    response: web.StreamResponse | None = None
    while True:
        if frames.overflowing and response is not None:
            return await _end(response, stream_error(None))
        if tag == b"{":  # the master's own answer: the worker died, a timeout...
            failed = orjson.loads(frame).get("error") or {}
            if response is None:
                return refusal(failed)
            return await _end(response, stream_error(failed))
        chunk = b""
        if tag == messages.LLM_HEAD:
            status, headers = _head(frame[1:])
            # its first bytes already here: the head goes out with them, in one send
            kind = _HeadWithData if frames.has_data() else web.StreamResponse
            response = kind(status=status, headers=headers)
            await response.prepare(request)
        elif response is not None and tag in _STREAM_BYTES:
            chunk = frame[1:]
        if response is not None and not last and (chunk or tag == messages.LLM_HEAD):
            ready = frames.ready_data()
            if ready:
                chunk = b"".join([chunk, *(raw[1:] for _, raw in ready)])
                last = ready[-1][0]
            if chunk and not last:
                await response.write(chunk)  # returns once the client has room for more
                frames.took(len(chunk))
        if last:
            if response is None:
                return refusal({"code": -32603,
                                "message": "Internal error: an answer without a head"})
            await response.write_eof(chunk)  # the last bytes and the end in one send
            return response
        last, frame = await frames.get()
        tag = frame[:1]


class _HeadWithData(web.StreamResponse):
    """A stream whose head waits for its first bytes (aiohttp's Response does the same
    with its body), for one send where there would be two."""

    _send_headers_immediately = False


async def _end(response: web.StreamResponse, event: bytes) -> web.StreamResponse:
    await response.write_eof(event)
    return response


# A head's JSON -> (status, headers): the workers send a handful of distinct heads (a
# status and a content type), so each is parsed once; bounded, for a worker that varies
_heads: dict[bytes, tuple[int, CIMultiDictProxy[str]]] = {}
_HEADS_KEPT = 256


def _head(head: bytes) -> tuple[int, CIMultiDictProxy[str]]:
    """The status and headers of a head; read-only and shared (web.Response and
    StreamResponse copy the headers they are given)."""
    known = _heads.get(head)
    if known is None:
        status, headers, _ = messages.unpack_llm_head(b"h" + head)
        if len(_heads) >= _HEADS_KEPT:
            _heads.clear()
        known = _heads[head] = (status, CIMultiDictProxy(CIMultiDict(headers)))
    return known
