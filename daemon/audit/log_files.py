"""The audit files on disk: append, fsync, rotate, recover after a crash.

Files are ``audit-00000001.jsonl``, ``audit-00000002.jsonl``, ... in the audit dir.  The
first file opens with a genesis record; every later one opens with a rotate record that
carries the head of the chain so far, so the chain spans files.

Only the audit process's writer thread touches an ``AuditFiles``; batches go to it one
at a time, so a failed write (disk full) can be rolled back to the last durable byte
and the chain state with it: nothing half-written stays behind.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import re
import time
from collections import OrderedDict
from pathlib import Path

import orjson

from daemon import __version__
from daemon.audit import chain

log = logging.getLogger("audit")

DEDUP_TAIL_BYTES = 8 << 20  # record ids read back at start, to drop resent copies
DEDUP_MEMORY = 200_000
CHUNK = 1 << 16
# in a written line: only right after n and prev, never inside the arguments, which an
# agent chooses (a forged id there must not make a real record look written)
_LINE_ID = re.compile(rb'^\{"n":\d+,"prev":"[0-9a-f]{64}","id":"([^"]+)"', re.MULTILINE)


class WriteFailed(Exception):
    """A batch could not be written; nothing of it is in the log."""


class AuditFiles:
    def __init__(self, directory: Path, rotate_bytes: int, rotate_seconds: float,
                 public_key: str) -> None:
        self.dir = directory
        self.rotate_bytes = rotate_bytes
        self.rotate_seconds = rotate_seconds
        self.public_key = public_key
        self.index = 0
        self.fd = -1
        self.size = 0
        self.opened_at = 0.0
        self.n = 0  # the next record's number
        self.head = chain.ZERO
        self.seen: OrderedDict[bytes, None] = OrderedDict()  # ids already in the log

    @property
    def current(self) -> Path:
        return self.dir / chain.file_name(self.index)

    def open(self) -> list[bytes]:
        """Find where the log ends; returns records to append about what was found (a
        torn tail).  A new log starts with its genesis record."""
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        files = chain.log_files(self.dir)
        while files and files[-1].stat().st_size == 0:  # made, then crashed before a line
            files.pop().unlink()
        if not files:
            self._create(1, {"kind": "genesis", "t": time.time(), "key": self.public_key,
                             "daemon": __version__})
            return []
        last = files[-1]
        self.index = int(chain.FILE_PATTERN.match(last.name).group(1))  # type: ignore[union-attr]
        self.fd = os.open(last, os.O_RDWR | os.O_APPEND | os.O_CLOEXEC)
        notes = self._cut_torn_tail(last)
        self.size = os.fstat(self.fd).st_size
        self._recover_head(last)
        self._remember_ids(files)
        return notes

    def _cut_torn_tail(self, path: Path) -> list[bytes]:
        size = os.fstat(self.fd).st_size
        if not size or os.pread(self.fd, 1, size - 1) == b"\n":
            return []
        keep = _line_start(self.fd, size)
        torn = os.pread(self.fd, size - keep, keep)
        os.ftruncate(self.fd, keep)
        os.fsync(self.fd)
        log.warning("audit: %s ended in a torn line of %d bytes (a crash mid-write); "
                    "truncated it to the last whole record, and recorded that",
                    path.name, len(torn))
        return [orjson.dumps({"kind": "torn_tail", "t": time.time(), "file": path.name,
                              "offset": keep, "bytes": len(torn),
                              "sha256": hashlib.sha256(torn).hexdigest()})]

    def _recover_head(self, path: Path) -> None:
        end = self.size - 1  # the last line's newline
        start = _line_start(self.fd, end)
        line = os.pread(self.fd, end - start, start)
        record = orjson.loads(line)
        self.n = int(record["n"]) + 1
        self.head = chain.node(bytes.fromhex(record["prev"]), chain.leaf(line))
        first = orjson.loads(_first_line(self.fd))
        self.opened_at = float(first.get("t", time.time()))
        log.info("audit: log continues in %s at record %d", path.name, self.n)

    def _remember_ids(self, files: list[Path]) -> None:
        budget = DEDUP_TAIL_BYTES
        for path in reversed(files):
            size = path.stat().st_size
            with path.open("rb") as f:
                f.seek(max(0, size - budget))
                for found in _LINE_ID.finditer(f.read()):
                    self._seen(found.group(1))
            budget -= size
            if budget <= 0:
                break

    def _seen(self, record_id: bytes) -> None:
        self.seen[record_id] = None
        if len(self.seen) > DEDUP_MEMORY:
            self.seen.popitem(last=False)

    def _create(self, index: int, first: dict[str, object]) -> None:
        self.index = index
        path = self.current
        self.fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC,
                          0o600)
        self.size = 0
        self.opened_at = time.time()
        self.append([orjson.dumps(first)], sync=True)
        dir_fd = os.open(self.dir, os.O_RDONLY)
        try:
            os.fsync(dir_fd)  # the new name is durable too
        finally:
            os.close(dir_fd)

    def append(self, bodies: list[bytes], sync: bool, ids: list[bytes] | None = None) -> None:
        """Chain and write the records in one write; fsync if asked; ``ids`` are the
        records' ids, remembered once written.  On failure the file and the chain are as
        they were before, and WriteFailed says why."""
        n, head, size = self.n, self.head, self.size
        lines = []
        for body in bodies:
            line, head = chain.link(n, head, body)
            lines.append(line)
            n += 1
        data = b"\n".join(lines) + b"\n"
        try:
            written = 0
            view = memoryview(data)
            while written < len(data):
                written += os.write(self.fd, view[written:])
            if sync:
                os.fdatasync(self.fd)
        except OSError as exc:
            with contextlib.suppress(OSError):  # shrinking needs no space
                os.ftruncate(self.fd, size)
            why = "disk full" if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG) \
                else exc.strerror or str(exc)
            raise WriteFailed(f"{why} ({self.current})") from None
        self.n, self.head, self.size = n, head, size + len(data)
        for record_id in ids or ():
            if record_id:  # the audit process's own notes have none
                self._seen(record_id)

    def is_written(self, record_id: bytes) -> bool:
        return record_id in self.seen

    def sync(self) -> None:
        os.fdatasync(self.fd)

    def due_for_rotation(self) -> bool:
        return self.size >= self.rotate_bytes or \
            time.time() - self.opened_at >= self.rotate_seconds

    def rotate(self) -> None:
        """Close this file durable and open the next, which starts from the chain head.
        If the next file cannot be made (disk full), this one stays current."""
        previous = self.current.name
        os.fsync(self.fd)
        old = (self.index, self.fd, self.size, self.opened_at)
        try:
            self._create(self.index + 1, {"kind": "rotate", "t": time.time(),
                                          "from": previous})
        except (OSError, WriteFailed):
            if self.fd != old[1]:  # made, but its first record did not fit: take it back
                os.close(self.fd)
                with contextlib.suppress(OSError):
                    self.current.unlink()
            self.index, self.fd, self.size, self.opened_at = old
            raise
        os.close(old[1])
        log.info("audit: rotated %s -> %s at record %d", previous, self.current.name, self.n)

    def close(self) -> None:
        if self.fd >= 0:
            with contextlib.suppress(OSError):
                os.fsync(self.fd)
            os.close(self.fd)
            self.fd = -1


def _line_start(fd: int, end: int) -> int:
    """The offset where the line ending at ``end`` starts (just after the newline before
    it), read backwards a chunk at a time: a record can be longer than any window."""
    pos = end
    while pos > 0:
        start = max(0, pos - CHUNK)
        found = os.pread(fd, pos - start, start).rfind(b"\n")
        if found >= 0:
            return start + found + 1
        pos = start
    return 0


def _first_line(fd: int) -> bytes:
    data = b""
    while b"\n" not in data:
        chunk = os.pread(fd, CHUNK, len(data))
        if not chunk:
            break
        data += chunk
    return data.split(b"\n", 1)[0]
