"""The audit process's end of an AuditLink, for unit tests: a small ROUTER (the network
edge) that answers records on the audit wire of ipc.messages as a test tells it."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import orjson
import zmq

from daemon.ipc import messages
from daemon.ipc.zmq_endpoint import ZmqEndpoint, bind_router


@contextmanager
def short_endpoint() -> Iterator[str]:
    """An ipc:// endpoint in a fresh dir (socket paths must stay under ~100 bytes)."""
    with tempfile.TemporaryDirectory(prefix="wa-link-") as short:
        yield f"ipc://{short}/audit.sock"


class AuditWriter:
    """The audit process's end of the link (the network edge): records what arrives and
    answers "ack", "nack" (with a reason) or nothing ("silent")."""

    def __init__(self, ctx: zmq.Context[zmq.Socket[bytes]], endpoint: str,
                 answer: str = "ack") -> None:
        self.endpoint = ZmqEndpoint(bind_router(ctx, endpoint), self._on_frames)
        self.answer = answer
        self.received: list[tuple[int, dict[str, Any]]] = []  # (link's number, record)

    def _on_frames(self, frames: list[bytes]) -> None:
        identity, payload = frames
        for envelope in messages.envelopes(payload):
            assert envelope[:1] == messages.RECORD
            n, line = messages.unpack_seq(envelope)
            self.received.append((n, orjson.loads(line)))
            if self.answer == "ack":
                self.endpoint.send([identity, messages.pack_range(messages.ACK, n, n)])
            elif self.answer == "nack":
                self.endpoint.send([identity, messages.pack_range(messages.NACK, n, n,
                                                                  b"disk full")])

    def records(self) -> list[dict[str, Any]]:
        """Each record once, in the order it first came: a link may send one again (on
        reconnecting, or unanswered), and the real writer drops copies by id."""
        seen: dict[str, dict[str, Any]] = {}
        for _, record in self.received:
            seen.setdefault(record["id"], record)
        return list(seen.values())

    def kinds(self) -> list[str]:
        return [record["kind"] for record in self.records()]

    def close(self) -> None:
        self.endpoint.close()
