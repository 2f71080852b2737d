"""What agents' incomplete lines may hold in the master: time and memory (slowloris).

A line must complete within ``line_timeout`` seconds of its first byte, and the
incomplete lines of all TCP connections together may hold at most ``max_pending_bytes``;
past that, the connection whose incomplete line is the oldest is closed.  So a client
trickling a byte a second holds a connection for seconds, many such clients hold a
bounded amount of memory, and an agent whose lines arrive whole is never touched: it
holds nothing between reads.
"""

from __future__ import annotations

import logging
import time
from typing import Protocol

from daemon.config import Settings
from daemon.protocol import jsonrpc

log = logging.getLogger("tcp")


class LineHolder(Protocol):
    """A connection that may hold an incomplete line (front.tcp)."""

    pending_bytes: int

    def cut_off(self, error: bytes) -> None: ...


class LineGuard:
    def __init__(self, line_timeout: float, max_pending_bytes: int) -> None:
        self.line_timeout = line_timeout
        self.max_pending_bytes = max_pending_bytes
        self.started: dict[LineHolder, float] = {}  # in order of when their line began
        self.total = 0
        self.closed: dict[str, int] = {}  # why -> connections closed since the last sweep

    def retune(self, line_timeout: float, max_pending_bytes: int) -> None:
        self.line_timeout, self.max_pending_bytes = line_timeout, max_pending_bytes

    def apply(self, settings: Settings) -> list[str]:
        """A reload: the new limits hold from the next read and the next sweep."""
        listen = settings.config.listen
        if (listen.line_timeout, listen.max_pending_bytes) == (self.line_timeout,
                                                               self.max_pending_bytes):
            return []
        self.retune(listen.line_timeout, listen.max_pending_bytes)
        return [f"tcp line limits {listen.line_timeout:g}s, {listen.max_pending_bytes} bytes"]

    def update(self, conn: LineHolder, held: int, in_line: bool, fresh: bool) -> None:
        """After a read: ``conn`` holds ``held`` bytes of a line that is still open
        (``in_line``), begun in this read if ``fresh``."""
        self.total += held - conn.pending_bytes
        conn.pending_bytes = held
        if not in_line:
            self.started.pop(conn, None)
        elif fresh or conn not in self.started:
            self.started.pop(conn, None)  # to the end: the newest line
            self.started[conn] = time.monotonic()
        while self.total > self.max_pending_bytes and self.started:
            oldest = next(iter(self.started))
            self._cut(oldest, "over max_pending_bytes", jsonrpc.error(
                None, jsonrpc.BUSY, f"Busy: agents' incomplete lines hold over "
                f"{self.max_pending_bytes} bytes; closing the oldest"))

    def forget(self, conn: LineHolder) -> None:
        self.started.pop(conn, None)
        self.total -= conn.pending_bytes
        conn.pending_bytes = 0

    def sweep(self, now: float) -> None:
        """Close the connections whose line began more than line_timeout ago (and say,
        in one line per sweep rather than one per connection, what was closed)."""
        cutoff = now - self.line_timeout
        late = jsonrpc.error(None, jsonrpc.INVALID_REQUEST, "Invalid Request: line not "
                             f"completed within {self.line_timeout:g}s; closing")
        while self.started:
            conn, began = next(iter(self.started.items()))
            if began > cutoff:
                break
            self._cut(conn, f"line not completed within {self.line_timeout:g}s", late)
        for why, count in self.closed.items():
            log.warning("closed %d tcp connections: %s", count, why)
        self.closed.clear()

    def _cut(self, conn: LineHolder, why: str, error: bytes) -> None:
        self.closed[why] = self.closed.get(why, 0) + 1
        self.forget(conn)
        conn.cut_off(error)
