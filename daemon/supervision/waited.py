"""Children of the master that some thread waits for itself (plugin checks): the reaper
must leave them alone.  A module of its own, with no imports of ours, so that the plugin
sandbox (a fresh interpreter per check) does not pay for the supervision stack."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

_pids: set[int] = set()
_lock = threading.Lock()


@contextlib.contextmanager
def waited_for() -> Iterator[set[int]]:
    """Start a child and add its pid to the set inside this block: the reaper leaves it
    to whoever waits for it, until it is discarded again (also inside such a block)."""
    with _lock:
        yield _pids
