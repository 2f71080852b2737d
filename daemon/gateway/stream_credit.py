"""Flow control of the streams a gateway worker sends the master: a credit window.

A stream may have at most WINDOW bytes sent to the master that the agent has not taken
yet.  The master, as it writes a stream out to its client, gives the bytes back
(ipc.messages CREDIT, one per CREDIT_EVERY bytes written, so a short answer costs no
message); a stream whose window is full waits before it reads more from its provider.
So a client that reads slowly slows the provider read down (aiohttp stops reading the
socket once its buffer is full, and TCP tells the provider), and each process holds a
bounded amount of a stream: the master at most WINDOW plus one provider read, the
worker one read and aiohttp's buffer.
"""

from __future__ import annotations

import asyncio

from daemon.ipc.messages import CREDIT_WINDOW as WINDOW


class Window:
    """One stream's bytes in flight."""

    __slots__ = ("opened", "out")

    def __init__(self) -> None:
        self.out = 0
        self.opened = asyncio.Event()
        self.opened.set()

    def sent(self, size: int) -> None:
        self.out += size
        if self.out >= WINDOW:
            self.opened.clear()

    def taken(self, size: int) -> None:
        self.out = max(0, self.out - size)
        if self.out < WINDOW:
            self.opened.set()

    async def room(self) -> None:
        """Returns once the stream may send more (at once, unless its window is full)."""
        if not self.opened.is_set():
            await self.opened.wait()


class Credits:
    """The windows of a worker's open streams, by request seq."""

    def __init__(self) -> None:
        self.windows: dict[int, Window] = {}

    def open(self, seq: int) -> Window:
        window = self.windows[seq] = Window()
        return window

    def close(self, seq: int) -> None:
        self.windows.pop(seq, None)

    def taken(self, seq: int, size: int) -> None:
        window = self.windows.get(seq)
        if window is not None:  # a credit for a stream that ended meanwhile: moot
            window.taken(size)
