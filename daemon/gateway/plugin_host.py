"""The plugin versions a gateway worker hosts, and its half of the master's hot swap.

A swap is two-phase, driven by the master across all gateway workers: ``prepare`` loads
the new version and dry-runs ``migrate`` on a copy of this worker's live state;
``commit`` migrates the live state for real and swaps the chain in one step of the event
loop, between calls.  If any worker fails to prepare, every worker aborts.  Calls already
running finish on the old version (plugin_chain), later calls use the new one.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import logging
from typing import Any

import orjson

from daemon.gateway.plugin_chain import Hosted
from daemon.hotswap.plugin_config import plugin_config
from daemon.hotswap.source import PluginSource, load_class

log = logging.getLogger("plugins")
CLOSE_GRACE = 120.0  # an old version is closed once calls that began on it are surely done


def build(spec: dict[str, Any]) -> Hosted:
    """One plugin version from the master's spec: its module (compiled from the bytes,
    once) and an instance, not yet given any state."""
    code = base64.b64decode(spec["code"])
    cls = load_class(PluginSource(spec["path"], code, spec["sha256"]))
    table = spec.get("config") or {}
    mode = str(table.get("mode", "enforce"))
    budget = float(table.get("budget_ms", spec.get("budget_ms", 50))) / 1000
    plugin = cls(plugin_config(cls, table), logging.getLogger(f"plugin.{cls.name}"))
    return Hosted(cls.name, cls.version, cls.priority, spec["sha256"], mode, budget, plugin)


def initial_state(new: Hosted, spec: dict[str, Any]) -> Any:
    """A first load: resumed from the master's latest snapshot, else fresh."""
    if spec.get("state") is None:
        return new.plugin.initial_state()
    snapshot_version = spec.get("state_version")
    if snapshot_version is None or snapshot_version == new.version:
        return spec["state"]
    return new.plugin.migrate(spec["state"], snapshot_version)


class PluginHost:
    def __init__(self) -> None:
        self.chain: tuple[Hosted, ...] = ()
        self.pending: dict[str, Hosted] = {}  # prepared, waiting for commit
        self._by_kind: dict[str, tuple[tuple[Hosted, ...], tuple[Hosted, ...]]] = {}

    def chain_for(self, kind: str) -> tuple[Hosted, ...]:
        """The chain of the plugins that see calls of this kind (Plugin.kinds); the
        same tuple as ``chain`` when all do, so its hooks are looked up once."""
        found = self._by_kind.get(kind)
        chain = self.chain
        if found is not None and found[0] is chain:
            return found[1]
        seen = tuple(h for h in chain if kind in h.plugin.kinds)
        if len(seen) == len(chain):
            seen = chain
        self._by_kind[kind] = (chain, seen)
        return seen

    def find(self, name: str) -> Hosted | None:
        return next((h for h in self.chain if h.name == name), None)

    def install(self, specs: list[dict[str, Any]]) -> None:
        """At worker start, before READY: the plugins the master has committed."""
        for spec in specs:
            new = build(spec)
            new.plugin.state = initial_state(new, spec)
            self._swap(new)

    def prepare(self, spec: dict[str, Any]) -> None:
        """Build the version and dry-run it on a copy of the live state; raises if this
        worker cannot take it."""
        new = build(spec)
        current = self.find(new.name)
        if current is not None:
            new.plugin.migrate(copy.deepcopy(current.plugin.state), current.version)
        else:
            new.plugin.state = initial_state(new, spec)
        self.pending[new.name] = new

    def commit(self, name: str) -> Hosted:
        """Migrate the live state for real and swap, in one step of the event loop."""
        new = self.pending.pop(name)
        current = self.find(name)
        if current is not None:
            new.plugin.state = new.plugin.migrate(current.plugin.state, current.version)
        return self._swap(new)

    def abort(self, name: str) -> None:
        self.pending.pop(name, None)

    def unload(self, name: str) -> None:
        old = self.find(name)
        self.chain = tuple(h for h in self.chain if h.name != name)
        if old is not None:
            self._close_later(old)

    def _swap(self, new: Hosted) -> Hosted:
        old = self.find(new.name)
        others = [h for h in self.chain if h.name != new.name]
        self.chain = tuple(sorted([*others, new], key=lambda h: (h.priority, h.name)))
        if old is not None:
            self._close_later(old)
        return new

    @staticmethod
    def _close_later(old: Hosted) -> None:
        def close() -> None:
            try:
                old.plugin.close()
            except Exception:
                log.exception("plugin %s v%s: close() failed", old.name, old.version)
        try:
            asyncio.get_running_loop().call_later(CLOSE_GRACE, close)
        except RuntimeError:
            close()

    def snapshot(self) -> dict[str, Any]:
        return {h.name: {"version": h.version, "state": h.plugin.state} for h in self.chain}


def state_bytes(host: PluginHost) -> bytes:
    return orjson.dumps(host.snapshot(), default=str)
