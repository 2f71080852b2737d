"""The audit process's writer thread: records in, batches to disk, acknowledgements out.

The thread owns the ROUTER that gateway workers and the master send records to.  It
blocks in zmq_poll; when records arrive it takes every one waiting, writes them as one
batch (group commit: what arrives during a write and fsync waits in ZeroMQ's queue and
forms the next batch, so under load one fsync covers many calls, and at low load a record
waits for no timer), and acknowledges them itself once the batch is on disk ("always":
each record fsynced on its own; "never": written, no fsync).  No hop through the event
loop lies between a record's arrival, its fsync and its ack: each such hop costs a
thread wake-up and a GIL handover, which at one request at a time is most of the wait.

A write that fails (disk full) leaves nothing behind: the batch is rolled back, its
senders are told why (they fail their calls closed and send the records again later),
and the next batch simply tries again, so the daemon recovers once space is back.

The event loop asks the thread for a checkpoint or to stop (``ask``): the request waits
in a queue and a byte on a pipe wakes the thread, which serves it between batches.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import struct
import threading
import time
from collections import deque
from collections.abc import Callable

import zmq

from daemon import metrics
from daemon.audit import checkpoints
from daemon.audit.log_files import AuditFiles, WriteFailed
from daemon.ipc import messages

log = logging.getLogger("audit")
_ID_AT = len(b'{"id":"')
_NOBLOCK = int(zmq.NOBLOCK)  # plain ints: pyzmq converts enum flags on every call
_SNDMORE = int(zmq.SNDMORE) | _NOBLOCK
_RCVMORE = int(zmq.RCVMORE)
Entry = tuple[bytes, int, bytes, bytes]  # peer (b"": our own note), n, id, body
CHECKPOINT, STOP = "checkpoint", "stop"


class Writer:
    def __init__(self, files: AuditFiles, shipper: checkpoints.Checkpointer,
                 router: zmq.Socket[bytes], fsync: str) -> None:
        self.files = files
        self.shipper = shipper
        self.fsync = fsync
        self.router = router  # used by the writer thread only, once it runs
        self.failing: str | None = None
        self.waiting = 0  # records of the batch being written (the status's "pending")
        self.notes: list[Entry] = []  # own records: the first batch, and kept on failure
        self._asks: deque[tuple[str, concurrent.futures.Future[None]]] = deque()
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._thread = threading.Thread(target=self._run, name="audit-writer", daemon=True)
        self._done = False  # the thread has ended: asks are answered at once
        self._on_end: Callable[[], object] = lambda: None

    def add_note(self, body: bytes) -> None:
        """A record of the audit process's own (a torn tail it cut off); before start."""
        self.notes.append((b"", 0, b"", body))

    def start(self, on_end: Callable[[], object]) -> None:
        """``on_end`` is called (from the thread) if the thread ends without being asked."""
        self._on_end = on_end
        self._thread.start()

    async def ask(self, what: str) -> None:
        """A checkpoint, or stop (after committing what has arrived, and a last
        checkpoint); returns once the thread has done it."""
        future: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._asks.append((what, future))
        if self._done or self._wake_w < 0:  # the thread may not see it: answer it here
            _resolve(future)
        else:
            os.write(self._wake_w, b"\0")
        await asyncio.wrap_future(future)
        if what == STOP:
            self._thread.join()
            # closed here, not in the thread: an ask racing the thread's end may still
            # write its wake-up byte, which must not land in a closed (or reused) fd
            if self._wake_w >= 0:  # once: a second stop finds them closed
                os.close(self._wake_r)
                os.close(self._wake_w)
                self._wake_r = self._wake_w = -1

    # -- in the writer thread ---------------------------------------------------------------

    def _run(self) -> None:
        asked_to_stop = False
        try:
            asked_to_stop = self._serve()
        except Exception:  # a bug: the process ends and is restarted (records are resent)
            log.exception("audit: the writer thread failed")
        finally:
            self._done = True
            while self._asks:
                _resolve(self._asks.popleft()[1])
            self.router.close(linger=0)
            if not asked_to_stop:
                self._on_end()

    def _serve(self) -> bool:
        poller = zmq.Poller()
        poller.register(self.router, zmq.POLLIN)
        poller.register(self._wake_r, zmq.POLLIN)
        batch, self.notes = self.notes, []
        while True:
            if batch:
                self._commit(batch)
            for what, future in self._take_asks():
                try:
                    self._checkpoint()
                finally:
                    _resolve(future)
                if what == STOP:
                    return True
            if self.failing is None and self.shipper.due():
                self._checkpoint()
            batch = self._receive()  # what came in while the last batch was written
            metrics.audit_queue(len(batch))
            if not batch:
                poller.poll()
                batch = self._receive()

    def _take_asks(self) -> list[tuple[str, concurrent.futures.Future[None]]]:
        with contextlib.suppress(BlockingIOError):
            while os.read(self._wake_r, 4096):
                pass
        asks = []
        while self._asks:
            asks.append(self._asks.popleft())
        # a stop is served after the records that came before it
        if any(what == STOP for what, _ in asks):
            batch = self._receive()
            if batch:
                self._commit(batch)
        return asks

    def _receive(self) -> list[Entry]:
        """Every record waiting in the ROUTER's queue (read until EAGAIN)."""
        batch: list[Entry] = []
        accepted: set[bytes] = set()
        recv, more = self.router.recv, self.router.getsockopt
        while True:
            try:
                frames = [recv(_NOBLOCK)]
            except zmq.Again:
                break
            while more(_RCVMORE):
                frames.append(recv(_NOBLOCK))
            if len(frames) != 2:
                continue
            peer, payload = frames
            try:
                envelopes = messages.envelopes(payload)
            except struct.error:  # a bad frame must not end the thread (and the process)
                log.warning("audit: refusing a malformed frame from %r", peer)
                continue
            for envelope in envelopes:
                if envelope[:1] != messages.RECORD:
                    continue
                try:
                    n, body = messages.unpack_seq(envelope)
                    end = body.index(b'"', _ID_AT)
                except (struct.error, ValueError):
                    body, end = b"", 0
                if not (body.startswith(b'{"id":"') and body.endswith(b"}") and end) \
                        or b"\n" in body:
                    log.warning("audit: refusing a malformed record from %r", peer)
                    continue
                record_id = body[_ID_AT:end]
                if record_id in accepted:
                    continue  # a copy of one in this batch: its ack will come
                if self.files.is_written(record_id):
                    self._send(peer, [messages.pack_range(messages.ACK, n, n)])
                    continue
                accepted.add(record_id)
                batch.append((peer, n, record_id, body))
        return batch

    def _commit(self, batch: list[Entry]) -> None:
        batch, self.notes = self.notes + batch, []
        self.waiting = len(batch)
        started = time.perf_counter()
        error = self._write(batch)
        took = time.perf_counter() - started
        if error is None and self.failing is not None:
            log.warning("audit: writing again after: %s", self.failing)
        elif error is not None and self.failing is None:
            log.error("audit: cannot write the log: %s; calls fail closed until it can",
                      error)
        self.failing = error
        reply = messages.ACK if error is None else messages.NACK
        reason = b"" if error is None else error.encode()
        runs: dict[bytes, list[list[int]]] = {}  # per peer, runs of consecutive ids
        for entry in batch:
            peer, n, _, _ = entry
            if not peer:  # our own note: kept for the next batch if this one failed
                if error is not None:
                    self.notes.append(entry)
                continue
            peer_runs = runs.setdefault(peer, [])
            if peer_runs and peer_runs[-1][1] + 1 == n:
                peer_runs[-1][1] = n
            else:
                peer_runs.append([n, n])
        for peer, peer_runs in runs.items():  # one answer per run, one frame per peer
            self._send(peer, [messages.pack_range(reply, first, last, reason)
                              for first, last in peer_runs])
        self.waiting = 0
        metrics.audit_commit(took, len(batch))  # after the acks: off the calls' path

    def _write(self, batch: list[Entry]) -> str | None:
        """The batch goes to disk whole, or not at all."""
        try:
            if self.files.due_for_rotation():
                self.files.rotate()
            if self.fsync == "always":
                for _, _, record_id, body in batch:
                    self.files.append([body], True, [record_id])
            else:
                self.files.append([body for *_, body in batch], self.fsync == "batch",
                                  [record_id for _, _, record_id, _ in batch])
        except (WriteFailed, OSError) as exc:
            return str(exc)
        return None

    def _send(self, peer: bytes, envelopes: list[bytes]) -> None:
        payload = envelopes[0] if len(envelopes) == 1 else messages.pack_batch(envelopes)
        try:
            self.router.send(peer, _SNDMORE)
            self.router.send(payload, _NOBLOCK)
        except zmq.ZMQError as exc:  # a peer gone or not keeping up: it resends
            log.debug("audit: ack to %r dropped: %s", peer, exc)

    def _checkpoint(self) -> None:
        """Sign the chain head now.  A checkpoint that cannot be written (disk full) is
        logged; the next one covers its records."""
        try:
            self.shipper.checkpoint()
        except OSError as exc:
            log.error("audit: cannot write a checkpoint: %s", exc)


def _resolve(future: concurrent.futures.Future[None]) -> None:
    with contextlib.suppress(concurrent.futures.InvalidStateError):  # answered twice
        future.set_result(None)
