"""Which call a worker is running right now, in shared memory its supervisor can read.

A worker whose loop is stuck (a plugin hook in a CPU loop, C code that holds the GIL) or
that just died cannot say anything; this page of shared memory (one small file per
incarnation, mmapped by both sides) still can.  The worker writes into it, the master
only reads:

| offset | type    | field    | meaning                                              |
|--------|---------|----------|------------------------------------------------------|
| 0      | u64     | seq      | the call whose code is on the stack (0: none)        |
| 8      | f64     | deadline | CLOCK_MONOTONIC end of a plugin hook's budget (0: -) |
| 16     | 32 B    | plugin   | the plugin whose hook is running (for the log)       |

The master uses it twice: a hook past its deadline gets SIGUSR2, which the worker turns
into ``HookOverrun`` inside the hook (a pure-Python loop is interrupted there); a hook
still running a grace later is C code, so the worker is replaced.  When a worker dies or
hangs, ``seq`` names the call that did it: that call is answered -32018, never re-sent.
"""

from __future__ import annotations

import functools
import mmap
import os
import signal
import struct
import time
from pathlib import Path
from types import FrameType
from typing import NamedTuple

_LAYOUT = struct.Struct("=Qd32s")
_DEADLINE = struct.Struct("=d")  # at offset 8
SIZE = _LAYOUT.size
INTERRUPT_SIGNAL = signal.SIGUSR2  # the master's "your hook overran: stop it"


class HookOverrun(BaseException):
    """Raised inside a plugin hook that overran its budget.  A BaseException, so that a
    hook's own ``except Exception`` cannot swallow it."""


class Running(NamedTuple):
    seq: int
    deadline: float
    plugin: str


class CallSlot:
    def __init__(self, path: Path, view: mmap.mmap) -> None:
        self.path = path
        self._view = view
        # arm(seq, deadline, plugin) without a Python frame: the chain runner arms the
        # slot once per hook, a dozen times per call
        self.arm = functools.partial(_LAYOUT.pack_into, view, 0)
        self.interrupted = False  # set when HookOverrun was raised since the last reset

    # -- both sides ---------------------------------------------------------------------

    @classmethod
    def create(cls, path: Path) -> CallSlot:
        """The master makes a fresh slot for an incarnation before starting it."""
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            os.ftruncate(fd, SIZE)
            return cls(path, mmap.mmap(fd, SIZE))
        finally:
            os.close(fd)

    @classmethod
    def open(cls, path: str) -> CallSlot:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        try:
            return cls(Path(path), mmap.mmap(fd, SIZE))
        finally:
            os.close(fd)

    def close(self, unlink: bool = False) -> None:
        self._view.close()
        if unlink:
            self.path.unlink(missing_ok=True)

    # -- the master reads ---------------------------------------------------------------

    def read(self) -> Running:
        seq, deadline, plugin = _LAYOUT.unpack_from(self._view)
        return Running(seq, deadline, plugin.rstrip(b"\0").decode(errors="replace"))

    # -- the worker writes (on the hot path: one memcpy each) ---------------------------

    def running(self, seq: int) -> None:
        """Call ``seq``'s own code runs now (an inline tool), with no budget."""
        _LAYOUT.pack_into(self._view, 0, seq, 0.0, b"")

    # arm(seq, deadline, plugin), set in __init__: a plugin hook of call ``seq`` runs
    # until ``deadline`` (monotonic seconds); ``plugin``: its name, UTF-8, at most 32
    # bytes (encoded once per chain)

    @property
    def deadline(self) -> float:
        """The armed hook's deadline (0: none): what the interrupt handler checks."""
        return float(_DEADLINE.unpack_from(self._view, 8)[0])

    def idle(self) -> None:
        """No call's code is on the stack (the loop, our bookkeeping, a suspended call):
        a worker that dies now is not the fault of any one call."""
        _LAYOUT.pack_into(self._view, 0, 0, 0.0, b"")

    def interrupt(self, _signum: int, frame: FrameType | None) -> None:
        """The SIGUSR2 handler: raise HookOverrun in the hook, if one is still overdue.

        Python runs it in the main thread between two bytecodes of whatever was running.
        It raises only inside the hook's own code: in our bookkeeping around the hook
        (arming, disarming, the chain runner) the hook has already returned, and the
        master will signal again if it is still overdue."""
        deadline = self.deadline
        if not deadline or time.monotonic() <= deadline:
            return
        if frame is not None and frame.f_globals.get("__name__") in _BOOKKEEPING:
            return
        self.interrupted = True
        raise HookOverrun


_BOOKKEEPING = frozenset({__name__, "daemon.gateway.plugin_chain"})
