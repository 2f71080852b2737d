"""A process's AuditLink on its own: a real DEALER over a real ipc:// socket, with the
audit writer replaced by a small ROUTER that answers each record as a test tells it (the
audit wire of ipc.messages: RECORD in, ACK or NACK of a range of ids back)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any

import orjson
import pytest
import zmq

from daemon.audit import link as link_module
from daemon.audit.link import AuditLink
from daemon.ipc import messages
from daemon.protocol import jsonrpc
from daemon.protocol.jsonrpc import RpcError
from tests.unit.audit_writer import AuditWriter, short_endpoint


@pytest.fixture
def endpoint() -> Iterator[str]:
    with short_endpoint() as where:
        yield where


@asynccontextmanager
async def link_to(endpoint: str, answer: str = "ack", timeout: float = 5.0,
                  capacity: int = 100, durable: bool = True,
                  ) -> AsyncIterator[tuple[AuditLink, AuditWriter, zmq.Context[Any]]]:
    ctx: zmq.Context[Any] = zmq.Context()
    writer = AuditWriter(ctx, endpoint, answer)
    link = AuditLink(ctx, endpoint, "gateway-0#1", durable=durable, timeout=timeout,
                     capacity=capacity)
    try:
        yield link, writer, ctx
    finally:
        link.close()
        writer.close()
        ctx.destroy(linger=0)


async def until(predicate: Callable[[], Any], within: float = 2.0) -> None:
    deadline = time.monotonic() + within
    while not predicate():
        assert time.monotonic() < deadline, "not within the time allowed"
        await asyncio.sleep(0.005)


def record(kind: str = "call", **more: Any) -> bytes:
    return orjson.dumps({"kind": kind, "agent": "alice", **more})


def test_a_submitted_record_is_reported_durable_once_the_writer_acknowledges_it(endpoint):
    async def scenario() -> None:
        async with link_to(endpoint) as (link, writer, _):
            told: list[str | None] = []
            record_id = link.submit(record(tool="echo"), told.append)
            assert record_id.startswith("gateway-0#1/")
            await until(lambda: told)
            assert told == [None] and len(link) == 0
            (written,) = writer.records()
            assert written == {"id": record_id, "kind": "call", "agent": "alice",
                               "tool": "echo"}
            assert await link.write(record()) != record_id  # ids never repeat
    asyncio.run(scenario())


def test_a_refused_record_tells_the_caller_why_and_stays_held_until_it_is_written(
        endpoint, monkeypatch):
    monkeypatch.setattr(link_module, "RESEND_AFTER", 0.1)  # held records go again sooner

    async def scenario() -> None:
        async with link_to(endpoint, answer="nack") as (link, writer, _):
            told: list[str | None] = []
            link.submit(record(), told.append)
            await until(lambda: told)
            assert told == ["disk full"]
            with pytest.raises(RpcError) as refused:
                await link.write(record())
            assert refused.value.code == jsonrpc.AUDIT_UNAVAILABLE
            assert "Audit log unavailable: disk full" in refused.value.message
            await until(lambda: "withheld" in writer.kinds())  # the refusal is recorded
            assert len(link) >= 2  # nothing refused is dropped
            writer.answer = "ack"  # the disk has room again: the resends get through
            await link.drain(5.0)
            assert len(link) == 0
            assert told == ["disk full"]  # told once, not again when it is written
    asyncio.run(scenario())


def test_a_link_that_reconnects_sends_every_unacknowledged_record_again(endpoint,
                                                                       monkeypatch):
    monkeypatch.setattr(link_module, "RESEND_AFTER", 60.0)  # so only the reconnect resends

    async def scenario() -> None:
        async with link_to(endpoint, answer="silent") as (link, writer, ctx):
            told: list[str | None] = []
            for n in range(3):
                link.submit(record(n=n), told.append)
            await until(lambda: len(writer.records()) == 3)
            writer.close()  # the audit process dies without answering; a new one starts
            restarted = AuditWriter(ctx, endpoint)
            try:
                await until(lambda: told == [None, None, None])
                assert [r["n"] for r in restarted.records()] == [0, 1, 2]
            finally:
                restarted.close()
    asyncio.run(scenario())


def test_a_record_nobody_acknowledges_in_time_fails_its_call_with_minus_32017(endpoint):
    async def scenario() -> None:
        async with link_to(endpoint, answer="silent", timeout=0.2) as (link, _, _):
            started = time.monotonic()
            with pytest.raises(RpcError) as refused:
                await link.write(record())
            assert 0.2 <= time.monotonic() - started < 2.0
            assert refused.value.code == jsonrpc.AUDIT_UNAVAILABLE
            assert "no answer from the audit process (waited 0.2s)" in refused.value.message
    asyncio.run(scenario())


def test_records_over_capacity_wait_unsent_until_earlier_ones_are_acknowledged(endpoint):
    async def scenario() -> None:
        async with link_to(endpoint, answer="silent", capacity=2) as (link, writer, _):
            told: list[str | None] = []
            for n in range(3):
                link.submit(record(n=n), told.append)
            await until(lambda: len(writer.records()) == 2)
            await asyncio.sleep(0.05)
            assert [r["n"] for r in writer.records()] == [0, 1] and len(link) == 3
            writer.answer = "ack"
            first, second = (n for n, _ in writer.received[:2])
            writer.endpoint.send([b"gateway-0#1", messages.pack_range(messages.ACK, first,
                                                                      second)])
            await until(lambda: len(told) == 3)  # the third went out, and was acked
            assert [r["n"] for r in writer.records()] == [0, 1, 2]
    asyncio.run(scenario())


def test_without_fsync_a_call_goes_on_at_once_while_its_record_is_still_held(endpoint):
    async def scenario() -> None:
        async with link_to(endpoint, answer="silent", durable=False) as (link, _, _):
            told: list[str | None] = []
            link.submit(record(), told.append)
            assert told == [None] and len(link) == 1
    asyncio.run(scenario())
