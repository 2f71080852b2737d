"""What a call streams over HTTP ahead of a client that does not read its response is
bounded: the master holds at most STREAMED_MAX bytes of it, the rest is dropped."""

from __future__ import annotations

import asyncio

from daemon.front.mcp_exchange import STREAMED_MAX, Exchange


def test_a_call_streaming_to_a_client_that_does_not_read_holds_bounded_memory() -> None:
    async def flood() -> Exchange:
        exchange = Exchange(None)
        note = b'{"jsonrpc":"2.0","method":"notifications/message","params":{"data":"' \
            + b"x" * (1 << 20) + b'"}}'
        for _ in range(40):  # 40 MiB of log messages while the writer is stuck
            assert exchange.conn.progress is not None
            exchange.conn.progress(note)
        return exchange
    exchange = asyncio.run(flood())
    assert sum(map(len, exchange.streamed)) <= STREAMED_MAX
    assert exchange.held <= STREAMED_MAX and exchange.dropped > 20
    taken = exchange.take_streamed()
    assert len(taken) == 40 - exchange.dropped
    assert exchange.held == 0 and not exchange.streamed


def test_once_the_writer_takes_what_was_streamed_more_is_held_again() -> None:
    async def stream() -> tuple[int, int]:
        exchange = Exchange(None)
        assert exchange.conn.progress is not None
        exchange.conn.progress(b"a" * (STREAMED_MAX - 10))
        exchange.conn.progress(b"b" * 100)  # over: dropped
        exchange.take_streamed()
        exchange.conn.progress(b"c" * 100)  # taken: room again
        return exchange.dropped, len(exchange.streamed)
    assert asyncio.run(stream()) == (1, 1)
