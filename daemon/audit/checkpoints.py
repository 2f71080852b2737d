"""Signed checkpoints of the chain head, kept beside the log and shipped elsewhere.

Runs in the audit process's writer thread, between batches, so a checkpoint always
covers whole, fsynced batches.  Shipping: each checkpoint line is appended to
``<ship_dir>/checkpoints.jsonl`` (fsynced) and/or piped to ``ship_command``'s stdin (for
example a command that sends it to another host); a shipping failure is logged and
never stops the log.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import time
from pathlib import Path

import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from daemon.audit.log_files import AuditFiles
from daemon.audit.signing import CHECKPOINTS, sign

log = logging.getLogger("audit")


class Checkpointer:
    def __init__(self, files: AuditFiles, key: Ed25519PrivateKey, every_records: int,
                 ship_dir: str, ship_command: list[str]) -> None:
        self.files = files
        self.key = key
        self.every_records = every_records
        self.ship_dir = Path(ship_dir).expanduser() if ship_dir else None
        self.ship_command = ship_command
        self.last_n = -1
        self.running: list[subprocess.Popen[bytes]] = []

    def due(self) -> bool:
        return self.files.n - self.last_n >= self.every_records

    def checkpoint(self) -> None:
        files = self.files
        if files.n == self.last_n or files.fd < 0:
            return
        files.sync()  # a checkpoint covers only what is on disk
        line = orjson.dumps(sign(self.key, files.n, files.head.hex(), time.time())) + b"\n"
        _append_durably(files.dir / CHECKPOINTS, line)
        self.last_n = files.n
        if self.ship_dir is not None:
            try:
                self.ship_dir.mkdir(parents=True, exist_ok=True)
                _append_durably(self.ship_dir / CHECKPOINTS, line)
            except OSError as exc:
                log.error("audit: cannot ship checkpoint to %s: %s", self.ship_dir, exc)
        if self.ship_command:
            self._pipe(line)

    def _pipe(self, line: bytes) -> None:
        self.running = [p for p in self.running if not self._finished(p)]
        try:
            proc = subprocess.Popen(self.ship_command, stdin=subprocess.PIPE,
                                    stdout=subprocess.DEVNULL, close_fds=True)
        except OSError as exc:
            log.error("audit: cannot run ship_command %s: %s", self.ship_command[0], exc)
            return
        assert proc.stdin is not None
        with contextlib.suppress(BrokenPipeError):
            proc.stdin.write(line)
        proc.stdin.close()
        self.running.append(proc)

    @staticmethod
    def _finished(proc: subprocess.Popen[bytes]) -> bool:
        code = proc.poll()
        if code is not None and code != 0:
            log.error("audit: ship_command exited with status %d", code)
        return code is not None

    def wait_shipped(self, limit: float) -> None:
        until = time.monotonic() + limit
        for proc in self.running:
            try:
                proc.wait(max(0.0, until - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.error("audit: ship_command still running at exit; killed")
                proc.kill()
            self._finished(proc)


def _append_durably(path: Path, line: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)
