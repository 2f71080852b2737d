"""Audit process job: the only writer of the audit log.

Records arrive from gateway workers and the master on this process's ROUTER; one writer
thread (daemon.audit.writer) takes them, commits them in batches and acknowledges them.
The event loop only reports the log's status to the master and asks for a signed
checkpoint every ``checkpoint_seconds``.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from daemon.audit import checkpoints
from daemon.audit.log_files import AuditFiles
from daemon.audit.signing import load_or_create_key, public_text
from daemon.audit.writer import CHECKPOINT, STOP, Writer
from daemon.ipc import messages
from daemon.ipc.zmq_endpoint import bind_router
from daemon.worker.background import background, first_set
from daemon.worker.runtime import WorkerHandle

log = logging.getLogger("audit")


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
    writer = Writer(files, shipper, bind_router(worker.context, endpoint), fsync)
    for note in notes:
        writer.add_note(note)
    loop = asyncio.get_running_loop()
    ended = asyncio.Event()  # the writer thread died: the process ends, to be restarted
    writer.start(lambda: loop.call_soon_threadsafe(ended.set))
    try:
        async with background(_checkpoint_every(writer, checkpoint_seconds),
                              _report_every(worker, writer, 1.0)):
            await worker.ready()
            log.info("audit: writing %s (fsync %s)", files.current, fsync)
            await first_set(worker.stopping, ended)
    finally:
        await writer.ask(STOP)
        files.close()
    if ended.is_set():
        raise SystemExit(1)
    shipper.wait_shipped(5.0)


async def _report_every(worker: WorkerHandle, writer: Writer, seconds: float) -> None:
    while True:  # read across threads: each figure is whole, if a moment old
        files, shipper = writer.files, writer.shipper
        worker.send(messages.AuditStatus(
            file=files.current.name, records=files.n, fsync=writer.fsync,
            failing=writer.failing, checkpointed=max(shipper.last_n, 0),
            pending=writer.waiting))
        await asyncio.sleep(seconds)


async def _checkpoint_every(writer: Writer, seconds: float) -> None:
    while True:
        await asyncio.sleep(seconds)
        await writer.ask(CHECKPOINT)
