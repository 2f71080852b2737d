"""A process's link to the audit process: records out, acknowledgements back.

Gateway workers and the master hold every record they submit until the audit process
acknowledges it (written and, in the "always" and "batch" modes, fsynced).  At most
``capacity`` records are out at once; later ones wait in line unsent, and so do the calls
behind them.  A call whose record is not acknowledged within ``timeout`` fails closed,
but its record stays held and is sent again until it is written: when the audit process
restarts, everything unacknowledged goes again at once (the audit process drops copies
it already wrote, by record id).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
import zmq
from zmq.utils.monitor import parse_monitor_message

from daemon import metrics
from daemon.ipc import messages
from daemon.ipc.zmq_endpoint import ZmqEndpoint
from daemon.protocol import jsonrpc
from daemon.protocol.jsonrpc import RpcError

log = logging.getLogger("audit")

Done = Callable[[str | None], None]  # None: durable; else why the record is not (yet)
RESEND_AFTER = 1.0  # seconds without an answer before a record is sent again
SWEEP_EVERY = 0.1


@dataclass(slots=True)
class _Held:
    id: int
    envelope: bytes
    done: Done | None  # told once, then None
    deadline: float
    sent_at: float = 0.0


class AuditLink:
    def __init__(self, ctx: zmq.Context[zmq.Socket[bytes]], endpoint: str, identity: str, *,
                 durable: bool, timeout: float, capacity: int) -> None:
        self.identity = identity
        # ids must never repeat across daemon runs (the audit process drops a record whose
        # id it already wrote), and worker names and incarnations do repeat
        self.prefix = f"{identity}/{os.urandom(4).hex()}"
        self.durable = durable  # False ("never"): calls do not wait for their records
        self.timeout = timeout
        self.capacity = capacity
        sock = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.IDENTITY, identity.encode())
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SNDHWM, 0)  # bounded by ``capacity`` instead
        sock.setsockopt(zmq.RECONNECT_IVL, 10)  # the audit process restarts in ~15 ms
        sock.setsockopt(zmq.RECONNECT_IVL_MAX, 200)
        monitor = sock.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED)
        sock.connect(endpoint)
        self.endpoint = ZmqEndpoint(sock, self._on_frames)
        self.monitor = ZmqEndpoint(monitor, self._on_monitor)
        self.unacked: dict[int, _Held] = {}  # in id order (dicts keep insertion order)
        self.queued: deque[_Held] = deque()  # over capacity: not sent yet
        self.last_error: str | None = None
        self._ids = itertools.count(1)
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep())

    @classmethod
    def from_options(cls, ctx: zmq.Context[zmq.Socket[bytes]], options: dict[str, Any],
                     identity: str) -> AuditLink:
        """From ``tree.audit_link_options``: the same settings in every process."""
        return cls(ctx, options["endpoint"], identity, durable=options["fsync"] != "never",
                   timeout=options["timeout"], capacity=options["buffer"])

    def __len__(self) -> int:
        return len(self.unacked) + len(self.queued)

    def submit(self, body: bytes, done: Done | None = None) -> str:
        """Hand over one record (a JSON object); ``done`` is told when the call behind it
        may go on.  Returns the record's id, unique across the daemon's processes."""
        n = next(self._ids)
        record_id = f"{self.prefix}:{n}"
        line = b'{"id":"%s",%s' % (record_id.encode(), body[1:])
        held = _Held(n, messages.pack_seq(messages.RECORD, n, line), done,
                     time.monotonic() + self.timeout)
        if len(self.unacked) < self.capacity:
            self._release(held)
        else:
            self.queued.append(held)
        return record_id

    async def write(self, body: bytes) -> str:
        """Submit and wait until the call may go on; raises -32017 if the record cannot
        be made durable in time."""
        future: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()

        def done(error: str | None) -> None:
            if not future.done():
                future.set_result(error)
        record_id = self.submit(body, done)
        error = await future
        if error is not None:
            raise audit_unavailable(error)
        return record_id

    async def drain(self, limit: float) -> None:
        """Wait (up to ``limit`` seconds) until every held record is acknowledged."""
        until = time.monotonic() + limit
        while len(self) and time.monotonic() < until:
            await asyncio.sleep(0.01)

    def close(self) -> None:
        self._sweeper.cancel()
        self.monitor.close()
        self.endpoint.close()

    # -- internals ------------------------------------------------------------------------

    def _release(self, held: _Held) -> None:
        """Send a record; in "never" its call goes on at once."""
        self._send(held)
        if not self.durable:
            self._tell(held, None)

    def _send(self, held: _Held) -> None:
        self.unacked[held.id] = held
        held.sent_at = time.monotonic()
        self.endpoint.send_batched(b"", held.envelope)

    def _tell(self, held: _Held, error: str | None) -> None:
        done, held.done = held.done, None
        if done is None:
            return
        done(error)
        if error is not None:  # the call behind it was refused: say so in the log too
            self.submit(orjson.dumps({"kind": "withheld", "t": time.time(),
                                      "record": f"{self.prefix}:{held.id}",
                                      "reason": error}))

    def _on_frames(self, frames: list[bytes]) -> None:
        for envelope in messages.envelopes(frames[-1]):
            first, last, rest = messages.unpack_range(envelope)
            if envelope[:1] == messages.ACK:
                self.last_error = None
                for n in range(first, last + 1):
                    held = self.unacked.pop(n, None)
                    if held is not None:
                        self._tell(held, None)
            elif envelope[:1] == messages.NACK:
                self.last_error = rest.decode(errors="replace")
                for n in range(first, last + 1):
                    held = self.unacked.get(n)
                    if held is not None:
                        self._tell(held, self.last_error)  # held on: sent again later
        while self.queued and len(self.unacked) < self.capacity:
            self._release(self.queued.popleft())

    def _on_monitor(self, frames: list[bytes]) -> None:
        event = parse_monitor_message(frames)
        if event["event"] == zmq.EVENT_HANDSHAKE_SUCCEEDED and self.unacked:
            log.info("audit process (re)connected: sending %d unacknowledged records again",
                     len(self.unacked))
            for held in list(self.unacked.values()):
                self._send(held)

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_EVERY)
            try:
                self._expire(time.monotonic())
            except Exception:  # the sweeper must outlive any one bad turn
                log.exception("audit link: sweep failed")

    def _expire(self, now: float) -> None:
        """Fail the calls whose records are overdue; send again what went unanswered."""
        overdue = [held for held in itertools.chain(self.unacked.values(), self.queued)
                   if held.done is not None and held.deadline < now]
        why = self.last_error or "no answer from the audit process"
        for held in overdue:  # telling may submit a note: not while iterating
            self._tell(held, f"{why} (waited {self.timeout:g}s)")
        for held in [h for h in self.unacked.values() if now - h.sent_at > RESEND_AFTER]:
            self._send(held)
        metrics.audit_held(len(self))


def audit_unavailable(why: str) -> RpcError:
    return RpcError(jsonrpc.AUDIT_UNAVAILABLE, f"Audit log unavailable: {why}; the call is "
                                               "refused because it could not be recorded")
