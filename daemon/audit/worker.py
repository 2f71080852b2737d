"""Audit process job: the only writer of the audit log.

Records arrive from gateway workers and the master on this process's ROUTER.  One
writer thread commits them in order, a batch at a time (group commit): while one batch
is being written and fsynced, the next accumulates, so under load one fsync covers many
calls, and at low load a record waits for no timer.  Acknowledgements go back once a
batch is on disk ("always": each record fsynced on its own; "never": written, no fsync).

A write that fails (disk full) leaves nothing behind: the batch is rolled back, its
senders are told why (they fail their calls closed and send the records again later),
and the next batch simply tries again, so the daemon recovers once space is back.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import zmq

from daemon import metrics
from daemon.audit import checkpoints
from daemon.audit.log_files import AuditFiles, WriteFailed
from daemon.audit.signing import load_or_create_key, public_text
from daemon.ipc import messages
from daemon.ipc.zmq_endpoint import ZmqEndpoint, bind_router
from daemon.worker.background import background
from daemon.worker.runtime import WorkerHandle

log = logging.getLogger("audit")
_ID_AT = len(b'{"id":"')


class AuditService:
    def __init__(self, files: AuditFiles, shipper: checkpoints.Checkpointer,
                 ctx: zmq.Context[zmq.Socket[bytes]], endpoint: str, fsync: str) -> None:
        self.files = files
        self.shipper = shipper
        self.fsync = fsync
        self.router = ZmqEndpoint(bind_router(ctx, endpoint), self.on_frames)
        self.thread = ThreadPoolExecutor(1, thread_name_prefix="audit-writer")
        self.pending: list[tuple[bytes, int, bytes, bytes]] = []  # peer, n, id, body
        self.accepted: set[bytes] = set()  # ids pending or being written
        self.committing = False
        self.idle = asyncio.Event()
        self.idle.set()
        self.failing: str | None = None
        self.notes: list[tuple[bytes, int, bytes, bytes]] = []  # own records to retry
        self.tasks: set[asyncio.Task[None]] = set()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def on_frames(self, frames: list[bytes]) -> None:
        if len(frames) != 2:
            return
        peer, payload = frames
        for envelope in messages.envelopes(payload):
            if envelope[:1] != messages.RECORD:
                continue
            n, body = messages.unpack_seq(envelope)
            if not (body.startswith(b'{"id":"') and body.endswith(b"}")) or b"\n" in body:
                log.warning("audit: refusing a malformed record from %r", peer)
                continue
            record_id = body[_ID_AT:body.index(b'"', _ID_AT)]
            if record_id in self.accepted:
                continue  # a copy of one about to be written: its ack will come
            if self.files.is_written(record_id):
                self.router.send_batched(peer, messages.pack_range(messages.ACK, n, n))
                continue
            self.accepted.add(record_id)
            self.pending.append((peer, n, record_id, body))
        self._commit_next()

    def add_note(self, body: bytes) -> None:
        """A record of the audit process's own (a torn tail it cut off)."""
        self.pending.append((b"", 0, b"", body))
        self._commit_next()

    def _commit_next(self) -> None:
        if self.committing or not self.pending:
            return
        batch, self.pending, self.notes = self.notes + self.pending, [], []
        self.committing = True
        self.idle.clear()
        done = asyncio.get_running_loop().run_in_executor(self.thread, self._write, batch)
        done.add_done_callback(lambda f: self._committed(batch, f.result()))

    def _write(self, batch: list[tuple[bytes, int, bytes, bytes]]) -> str | None:
        """In the writer thread: the batch goes to disk whole, or not at all."""
        started = time.perf_counter()
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
        finally:
            metrics.audit_commit(time.perf_counter() - started, len(batch))
        return None

    def _committed(self, batch: list[tuple[bytes, int, bytes, bytes]], error: str | None) -> None:
        self.committing = False
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
            peer, n, record_id, _ = entry
            self.accepted.discard(record_id)
            if not peer:  # our own note: kept for the next batch if this one failed
                if error is not None:
                    self.notes.append(entry)
                continue
            peer_runs = runs.setdefault(peer, [])
            if peer_runs and peer_runs[-1][1] + 1 == n:
                peer_runs[-1][1] = n
            else:
                peer_runs.append([n, n])
        for peer, peer_runs in runs.items():  # one answer per run, not per record
            for first, last in peer_runs:
                self.router.send_batched(peer, messages.pack_range(reply, first, last, reason))
        if error is None and self.shipper.due():
            self._spawn(self.checkpoint())
        metrics.audit_queue(len(self.pending))
        if self.pending:
            self._commit_next()
        else:
            self.idle.set()

    async def checkpoint(self) -> None:
        """Sign the chain head now (in the writer thread, between batches).  A checkpoint
        that cannot be written (disk full) is logged; the next one covers its records."""
        try:
            await asyncio.get_running_loop().run_in_executor(self.thread,
                                                             self.shipper.checkpoint)
        except OSError as exc:
            log.error("audit: cannot write a checkpoint: %s", exc)

    async def close(self) -> None:
        while not self.idle.is_set() or self.pending:
            await self.idle.wait()
            await asyncio.sleep(0)
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.checkpoint()
        self.router.close()
        self.thread.shutdown(wait=True)
        self.files.close()


async def run(worker: WorkerHandle, dir: str, state_dir: str, endpoint: str,
              fsync: str = "batch", rotate_bytes: int = 64 << 20,
              rotate_seconds: float = 86400.0, checkpoint_records: int = 1000,
              checkpoint_seconds: float = 10.0, ship_dir: str = "",
              ship_command: list[str] | None = None) -> None:
    try:
        key = load_or_create_key(Path(state_dir))
        files = AuditFiles(Path(dir), rotate_bytes, rotate_seconds, public_text(key))
        notes = files.open()
    except (OSError, ValueError, KeyError) as exc:
        # fail closed: no gateway worker may serve a call that cannot be recorded
        log.critical("audit: cannot continue the log in %s: %s: %s (check it with "
                     "`workingagents audit verify`)", dir, exc.__class__.__name__, exc)
        raise SystemExit(1) from None
    shipper = checkpoints.Checkpointer(files, key, checkpoint_records, ship_dir,
                                       ship_command or [])
    service = AuditService(files, shipper, worker.context, endpoint, fsync)
    for note in notes:
        service.add_note(note)
    async with background(_checkpoint_every(service, checkpoint_seconds),
                          _report_every(worker, service, 1.0)):
        await worker.ready()
        log.info("audit: writing %s (fsync %s)", files.current, fsync)
        await worker.stopping.wait()
    await service.close()
    shipper.wait_shipped(5.0)


async def _report_every(worker: WorkerHandle, service: AuditService, seconds: float) -> None:
    while True:
        files, shipper = service.files, service.shipper
        worker.send(messages.AuditStatus(
            file=files.current.name, records=files.n, fsync=service.fsync,
            failing=service.failing, checkpointed=max(shipper.last_n, 0),
            pending=len(service.pending)))
        await asyncio.sleep(seconds)


async def _checkpoint_every(service: AuditService, seconds: float) -> None:
    while True:
        await asyncio.sleep(seconds)
        await service.checkpoint()
