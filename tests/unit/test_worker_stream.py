"""What a gateway worker sends for one HTTP request, held in front.worker_stream.Frames
until the route writes it out: in order, none lost, and a stream's waiting bytes taken
together."""

from __future__ import annotations

import asyncio

from daemon.front.worker_stream import MAX_HELD, Frames
from daemon.ipc import messages

HEAD = messages.pack_llm_head(200, {"Content-Type": "text/event-stream"})


def test_frames_sent_before_the_route_waits_come_out_in_order() -> None:
    async def run() -> list[tuple[bool, bytes]]:
        frames = Frames()
        frames.conn.progress(HEAD)
        frames.conn.progress(b"d1")
        frames.conn.send(b"z2")
        return [await frames.get() for _ in range(3)]

    assert asyncio.run(run()) == [(False, HEAD), (False, b"d1"), (True, b"z2")]


def test_a_frame_sent_while_the_route_waits_reaches_it() -> None:
    async def run() -> tuple[bool, bytes]:
        frames = Frames()
        asyncio.get_running_loop().call_soon(frames.conn.send, b"e{}")
        return await frames.get()

    assert asyncio.run(run()) == (True, b"e{}")


def test_a_route_cancelled_while_waiting_loses_no_later_frame() -> None:
    async def run() -> tuple[bool, bytes]:
        frames = Frames()
        waiting = asyncio.ensure_future(frames.get())
        await asyncio.sleep(0)
        waiting.cancel()
        await asyncio.gather(waiting, return_exceptions=True)
        frames.conn.send(b"z")
        return await frames.get()

    assert asyncio.run(run()) == (True, b"z")


def test_waiting_stream_bytes_are_taken_together_up_to_the_first_other_frame() -> None:
    frames = Frames()
    for raw in (b"d1", b"d2", b"{\"error\":{}}", b"d3"):
        frames.conn.progress(raw)
    assert frames.ready_data() == [(False, b"d1"), (False, b"d2")]
    assert frames.ready_data() == []
    assert frames.held == len(b"{\"error\":{}}") + len(b"d3")


def test_waiting_stream_bytes_are_taken_up_to_the_stream_end() -> None:
    frames = Frames()
    frames.conn.progress(b"d1")
    frames.conn.send(b"z2")
    frames.conn.progress(b"d3")  # after the end: not part of this answer
    assert frames.ready_data() == [(False, b"d1"), (True, b"z2")]


def test_waiting_stream_bytes_are_taken_a_bounded_amount_at_a_time() -> None:
    frames = Frames()
    big = b"d" + b"x" * (messages.CREDIT_EVERY // 2)
    for _ in range(4):
        frames.conn.progress(big)
    assert len(frames.ready_data()) == 2
    assert len(frames.ready_data()) == 2


def test_bytes_held_past_the_cap_mark_the_stream_overflowing() -> None:
    frames = Frames()
    frames.conn.progress(b"d" + b"x" * MAX_HELD)
    assert frames.overflowing
    frames.ready_data()
    assert not frames.overflowing
