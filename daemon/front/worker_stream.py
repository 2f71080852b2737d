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
from collections.abc import Callable
from typing import Any

import orjson
from aiohttp import web

from daemon.front.switchboard import Connection
from daemon.ipc import messages
from daemon.ipc.messages import CREDIT_EVERY

# Bytes of a stream the master may hold for a client that reads more slowly than the
# worker writes; past it the request is dropped (an error event ends the stream)
MAX_HELD = 16 << 20


class Frames:
    """What the worker sent for one request, until the route has written it out.

    ``credit``: where the bytes the client took are given back to the worker
    (Switchboard.credit), in steps of CREDIT_EVERY, for a worker that waits for them
    (gateway.stream_credit, in the worker); None for one that does not (it is cut off
    at MAX_HELD)."""

    def __init__(self, credit: Callable[[Connection, int], None] | None = None) -> None:
        self.queue: asyncio.Queue[tuple[bool, bytes]] = asyncio.Queue()
        self.held = 0
        self.credit = credit
        self.taken = 0  # written out, not yet given back
        self.conn = Connection(self.last, lambda: None, "http", self.more)

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


# error (the JSON-RPC error object) -> the route's response, before the head is sent
Refusal = Callable[[dict[str, Any]], web.StreamResponse]
# error, or None for a client too slow to keep up -> the event that ends a stream
StreamError = Callable[[dict[str, Any] | None], bytes]


async def relay(request: web.Request, frames: Frames, refusal: Refusal,
                stream_error: StreamError) -> web.StreamResponse:
    """Write out the worker's answer; returns the response (the caller detaches the
    connection, which cancels the request in the worker if it is not over)."""
    response: web.StreamResponse | None = None

    async def end(event: bytes) -> web.StreamResponse:
        assert response is not None
        await response.write(event)
        await response.write_eof()
        return response

    while True:
        last, frame = await frames.get()
        if frames.overflowing and response is not None:
            return await end(stream_error(None))
        tag = frame[:1]
        if tag == b"{":  # the master's own answer: the worker died, a timeout...
            failed = orjson.loads(frame).get("error") or {}
            return refusal(failed) if response is None else await end(stream_error(failed))
        if tag == messages.LLM_WHOLE:
            status, headers, whole = messages.unpack_llm_head(frame)
            return web.Response(body=whole, status=status, headers=headers)
        if tag == messages.LLM_HEAD:
            status, headers, _ = messages.unpack_llm_head(frame)
            response = web.StreamResponse(status=status, headers=headers)
            await response.prepare(request)
        elif (response is not None and tag in (messages.LLM_DATA, messages.LLM_END)
              and len(frame) > 1):
            await response.write(frame[1:])  # returns once the client has room for more
            frames.took(len(frame) - 1)
        if last:
            if response is None:
                return refusal({"code": -32603,
                                "message": "Internal error: an answer without a head"})
            await response.write_eof()
            return response
