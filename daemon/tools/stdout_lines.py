"""An upstream server's stdout, split into lines with a cap on their length.

A line longer than the cap is dropped as it streams in (the reader never holds more than
the cap), and its first bytes are handed to a callback at once, so that the client can
fail the request it answered without waiting for the rest of it.
"""

from __future__ import annotations

from collections.abc import Callable

HEAD = 256  # bytes of an oversized line kept to say whose answer it was


class LineSplitter:
    def __init__(self, cap: int, on_oversized: Callable[[bytes], None]) -> None:
        self.cap = cap
        self.on_oversized = on_oversized
        self.buffer = bytearray()
        self.skipping = False  # inside an oversized line: drop bytes up to its newline

    def feed(self, data: bytes) -> list[bytes]:
        """The whole lines that ``data`` completes (without their newlines)."""
        buf = self.buffer
        scan = len(buf)  # the bytes held before contain no newline
        buf += data
        lines: list[bytes] = []
        start = 0
        while (end := buf.find(b"\n", scan)) >= 0:
            if self.skipping:
                self.skipping = False
            elif end - start > self.cap:
                self.on_oversized(bytes(buf[start:start + HEAD]))
            else:
                lines.append(bytes(buf[start:end]))
            start = scan = end + 1
        del buf[:start]
        if self.skipping:
            buf.clear()
        elif len(buf) > self.cap:
            self.on_oversized(bytes(buf[:HEAD]))
            self.skipping = True
            buf.clear()
        return lines
