"""The audit process's writer thread on its own: a real Writer on a real ipc:// ROUTER,
real AuditFiles in a temporary dir, and a real AuditLink (or a bare DEALER) sending to
it, all in this process."""

from __future__ import annotations

import asyncio
import tempfile
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import orjson
import pytest
import zmq

from daemon.audit.checkpoints import Checkpointer
from daemon.audit.link import AuditLink
from daemon.audit.log_files import AuditFiles
from daemon.audit.signing import CHECKPOINTS, load_or_create_key, public_text
from daemon.audit.verify import verify
from daemon.audit.writer import CHECKPOINT, STOP, Writer
from daemon.ipc import messages
from daemon.ipc.zmq_endpoint import bind_router
from tests.unit.audit_writer import short_endpoint


@asynccontextmanager
async def writer_in(directory: Path, fsync: str = "batch",
                    ) -> AsyncIterator[tuple[Writer, zmq.Context[Any], str, threading.Event]]:
    """A started Writer; yields it, its context, its endpoint and "ended unasked"."""
    ctx: zmq.Context[Any] = zmq.Context()
    (directory / "state").mkdir()
    key = load_or_create_key(directory / "state")
    files = AuditFiles(directory / "audit", 64 << 20, 86400.0, public_text(key))
    files.open()
    ended = threading.Event()
    with short_endpoint() as endpoint:
        writer = Writer(files, Checkpointer(files, key, 1000, "", []),
                        bind_router(ctx, endpoint), fsync)
        writer.start(ended.set)
        try:
            yield writer, ctx, endpoint, ended
        finally:
            await writer.ask(STOP)
            files.close()
            ctx.destroy(linger=0)


def lines(directory: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for path in sorted((directory / "audit").glob("audit-*.jsonl"))
            for line in path.read_bytes().splitlines()]


@pytest.mark.parametrize("fsync", ["batch", "always", "never"])
def test_a_record_is_in_the_log_by_the_time_the_link_hears_it_is_durable(fsync):
    async def scenario(directory: Path) -> None:
        async with writer_in(directory, fsync) as (_writer, ctx, endpoint, ended):
            link = AuditLink(ctx, endpoint, "gateway-0#1", durable=True, timeout=10.0,
                             capacity=100)
            try:
                heard: list[int] = []
                for i in range(20):  # some in one frame, some one by one
                    link.submit(orjson.dumps({"kind": "call", "i": i}),
                                lambda error, i=i: heard.append(i) if error is None else None)
                    if i % 5 == 0:
                        await link.write(orjson.dumps({"kind": "call", "sync": i}))
                while len(heard) < 20:
                    await asyncio.sleep(0.005)
                    written = {r.get("i") for r in lines(directory)}
                    assert set(heard) <= written  # never told before it is in the file
            finally:
                link.close()
            assert not ended.is_set()
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(asyncio.wait_for(scenario(Path(tmp)), 30))
        assert verify([Path(tmp) / "audit"]).ok


def test_a_copy_of_a_written_record_is_acknowledged_and_not_written_again():
    async def scenario(directory: Path) -> None:
        async with writer_in(directory) as (_writer, ctx, endpoint, _ended):
            sock = ctx.socket(zmq.DEALER)
            sock.setsockopt(zmq.LINGER, 0)
            sock.connect(endpoint)
            body = b'{"id":"gateway-0#1/ab:1","kind":"call"}'
            try:
                for _ in range(3):  # the first, then two copies (a resend)
                    await asyncio.to_thread(sock.send, messages.pack_seq(messages.RECORD, 1,
                                                                          body))
                    assert sock.poll(10_000), "no answer from the writer"
                    answer = sock.recv()
                    assert answer[:1] == messages.ACK
                    assert messages.unpack_range(answer)[:2] == (1, 1)
            finally:
                sock.close()
            assert [r.get("id") for r in lines(directory)].count("gateway-0#1/ab:1") == 1
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(asyncio.wait_for(scenario(Path(tmp)), 30))


def test_a_checkpoint_asked_of_the_writer_covers_every_record_written_before_it():
    async def scenario(directory: Path) -> None:
        async with writer_in(directory) as (writer, ctx, endpoint, _ended):
            link = AuditLink(ctx, endpoint, "master#1", durable=True, timeout=10.0,
                             capacity=100)
            try:
                for i in range(5):
                    await link.write(orjson.dumps({"kind": "call", "i": i}))
                await writer.ask(CHECKPOINT)
            finally:
                link.close()
            signed = (directory / "audit" / CHECKPOINTS).read_bytes().splitlines()
            assert orjson.loads(signed[-1])["n"] == len(lines(directory)) == 6  # + genesis
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(asyncio.wait_for(scenario(Path(tmp)), 30))


@pytest.mark.parametrize("garbage", [
    messages.pack_seq(messages.RECORD, 7, b'{"id":"}'),  # an id never closed
    messages.RECORD + b"\x00",  # too short for its sequence number
    messages.BATCH + b"\xff\xff",  # a batch whose length is cut off
], ids=["unclosed id", "short envelope", "cut batch"])
def test_a_malformed_frame_is_refused_and_the_writer_goes_on_serving(garbage):
    async def scenario(directory: Path) -> None:
        async with writer_in(directory) as (_writer, ctx, endpoint, ended):
            sock = ctx.socket(zmq.DEALER)
            sock.setsockopt(zmq.LINGER, 0)
            sock.connect(endpoint)
            body = b'{"id":"gateway-0#1/ab:2","kind":"call"}'
            try:
                await asyncio.to_thread(sock.send, garbage)
                await asyncio.to_thread(sock.send, messages.pack_seq(messages.RECORD, 2,
                                                                      body))
                assert sock.poll(10_000), "no answer from the writer"
                answer = sock.recv()
                assert answer[:1] == messages.ACK
                assert messages.unpack_range(answer)[:2] == (2, 2)
            finally:
                sock.close()
            assert not ended.is_set()
            assert [r.get("id") for r in lines(directory)].count("gateway-0#1/ab:2") == 1
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(asyncio.wait_for(scenario(Path(tmp)), 30))
