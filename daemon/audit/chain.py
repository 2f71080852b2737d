"""The hash chain over audit lines, with RFC 6962's domain separation.

Each line is one JSON object; the bytes of the line (without its newline) are the
record.  Like a Certificate Transparency log, a leaf hash and an interior hash can never
be confused, because they hash different prefixes:

    leaf(line)       = sha256(0x00 || line)
    head(n)          = sha256(0x01 || head(n-1) || leaf(line n))
    head(-1)         = 32 zero bytes (the genesis record, n = 0, chains from it)

Every record carries ``n`` (its position over all files) and ``prev`` (hex of head(n-1)),
so an edited, dropped, inserted or reordered line breaks the chain at the next line, and
a signed checkpoint (n, head) covers the tail, which no later line protects.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

ZERO = bytes(32)
FILE_PATTERN = re.compile(r"^audit-(\d{8})\.jsonl$")


def leaf(line: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + line).digest()


def node(prev: bytes, leaf_hash: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + prev + leaf_hash).digest()


def link(n: int, prev: bytes, body: bytes) -> tuple[bytes, bytes]:
    """The line for record ``n`` (``body`` is a JSON object without n and prev) and the
    chain head after it."""
    head = b'{"n":%d,"prev":"%s"' % (n, prev.hex().encode())
    line = head + (b"," + body[1:] if len(body) > 2 else b"}")
    return line, node(prev, leaf(line))


def file_name(index: int) -> str:
    return f"audit-{index:08d}.jsonl"


def log_files(directory: Path) -> list[Path]:
    """The audit files in ``directory``, in chain order."""
    return sorted(p for p in directory.iterdir() if FILE_PATTERN.match(p.name))
