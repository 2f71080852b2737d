"""The plugins the harness brings, as source text written into the daemon's plugin dir.

``poison``: a call whose arguments say ``{"spin": true}`` spins in a pure-Python CPU loop
in ``before_call`` (a hook stuck in a loop), far beyond any budget or heartbeat timeout.
``swapped``: a pass-through counter whose version the harness bumps to hot-swap it under
load; it never changes a call or a result, so the agents' checks stay exact.
"""

from __future__ import annotations

import os
from pathlib import Path

SPIN_SECONDS = 30.0

POISON = f'''
import time
from daemon.plugin import Plugin

class Poison(Plugin):
    name = "poison"
    version = 1
    priority = 1

    async def before_call(self, call):
        if call.arguments.get("spin"):
            deadline = time.monotonic() + {SPIN_SECONDS}
            n = 0
            while time.monotonic() < deadline:
                n += 1
        return None
'''

SWAPPED = '''
from daemon.plugin import Plugin

class Swapped(Plugin):
    name = "swapped"
    version = {version}
    priority = 50

    def initial_state(self):
        return {{"calls": 0}}

    def migrate(self, old_state, old_version):
        return {{"calls": int(old_state.get("calls", 0))}}

    async def before_call(self, call):
        self.state["calls"] += 1
        return None

    def self_test(self):
        assert isinstance(self.state["calls"], int)
'''


def drop(plugin_dir: Path, name: str, source: str) -> None:
    """The documented way: write ``.NAME.py.tmp``, then rename it to ``NAME.py``."""
    tmp = plugin_dir / f".{name}.py.tmp"
    tmp.write_text(source)
    os.chmod(tmp, 0o644)
    tmp.rename(plugin_dir / f"{name}.py")


def swapped_source(version: int) -> str:
    return SWAPPED.format(version=version)
