"""The master's plugin manager: find, validate, and swap plugin versions everywhere at once.

On a file drop (watchfiles), ``reload`` or SIGHUP it rescans the plugin dirs.  A new or
changed file is read only if trusted (owner, mode), validated in a sandbox process (it
imports, has one Plugin class, its version differs from the one serving, ``migrate`` on
a copy of the live state and ``self_test`` pass), and then swapped into every READY
gateway worker in two phases: all prepare, then all commit, or all abort.  A refused
version leaves the old one serving; ``status`` and ``plugins list`` say why.  Deleting a
file unloads its plugin.  Committed versions and their latest state snapshots also go
into a gateway worker's boot options each time it starts, so a restarted worker serves
with them from its first call, resuming from its latest state snapshot.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import watchfiles

from daemon import metrics
from daemon.config import Settings, plugin_dirs
from daemon.hotswap import swap
from daemon.hotswap.sandbox import validate
from daemon.hotswap.source import PluginSource, Refused, is_plugin_file, read_source
from daemon.supervision.bus import WorkerBus
from daemon.supervision.worker_child import WorkerChild

log = logging.getLogger("plugins")
STEP_TIMEOUT = 15.0


@dataclass
class Loaded:
    name: str
    version: int | str
    priority: int
    hooks: list[str]
    source: PluginSource
    config: dict[str, Any]  # its [plugins.config.NAME] table when it was swapped in


class PluginManager:
    def __init__(self, settings: Settings, bus: WorkerBus,
                 gateway_workers: Callable[[], list[WorkerChild]]) -> None:
        self.settings = settings
        self.bus = bus
        self.gateway_workers = gateway_workers
        self.loaded: dict[str, Loaded] = {}
        # path -> (sha256 of the refused bytes, or "" if unread; why)
        self.refused: dict[str, tuple[str, str]] = {}
        self.snapshots: dict[str, dict[str, Any]] = {}  # worker id -> {name: state}
        self._lock = asyncio.Lock()
        self._tokens = itertools.count(1)
        self._replies: dict[int, asyncio.Future[dict[str, Any]]] = {}
        bus.on(swap.REPLY, self._on_reply)
        bus.on(swap.STATE, self._on_state)

    # -- what the workers tell us -----------------------------------------------------

    def _on_reply(self, identity: bytes, message: dict[str, Any]) -> None:
        future = self._replies.pop(message.get("token"), None)  # type: ignore[arg-type]
        if future is not None and not future.done():
            future.set_result(message)

    def _on_state(self, identity: bytes, message: dict[str, Any]) -> None:
        worker = identity.decode().partition("#")[0]
        self.snapshots[worker] = message.get("plugins") or {}

    # -- specs: what a gateway worker needs to host a version ---------------------------

    def spec(self, source: PluginSource, name: str) -> dict[str, Any]:
        return {"name": name, "path": source.path, "sha256": source.sha256,
                "code": base64.b64encode(source.code).decode(), "config": self._table(name),
                "budget_ms": self.settings.config.plugins.budget_ms}

    def worker_plugins(self, worker: str) -> list[dict[str, Any]]:
        """The committed plugins for a worker's (re)start, with its latest state."""
        out = []
        for name, loaded in sorted(self.loaded.items()):
            spec = self.spec(loaded.source, name)
            snap = self.snapshots.get(worker, {}).get(name)
            if snap is not None:
                spec.update(state=snap.get("state"), state_version=snap.get("version"))
            out.append(spec)
        return out

    def boot_options(self, worker: WorkerChild) -> dict[str, Any]:
        """For a gateway worker's (re)start: the committed plugins, its latest state."""
        if worker not in self.gateway_workers():
            return {}
        return {"plugins": self.worker_plugins(worker.id),
                "snapshot_interval": self.settings.config.plugins.snapshot_interval}

    # -- the scan and the swap -------------------------------------------------------

    async def rescan(self) -> list[str]:
        """Bring the workers in line with the plugin dirs; returns what changed."""
        async with self._lock:
            changes: list[str] = []
            seen: dict[str, Path] = {}
            for directory in plugin_dirs(self.settings):
                if directory.is_dir():
                    for path in sorted(directory.iterdir()):
                        if is_plugin_file(path):
                            seen[str(path)] = path
            for key in [k for k in self.refused if k not in seen]:
                del self.refused[key]
            for key, path in seen.items():
                change = await self._consider(key, path)
                if change:
                    changes.append(change)
            for name, loaded in list(self.loaded.items()):
                if loaded.source.path not in seen:
                    await self._broadcast(swap.UNLOAD, name, {})
                    del self.loaded[name]
                    changes.append(f"plugin {name} unloaded ({loaded.source.path} is gone)")
                    log.info("plugin %s unloaded: %s was removed", name, loaded.source.path)
            metrics.plugins_loaded({n: str(p.version) for n, p in self.loaded.items()})
            return changes

    async def _consider(self, key: str, path: Path) -> str | None:
        try:
            source = read_source(path)
        except Refused as exc:
            return self._refuse(key, str(exc))
        current = next((lo for lo in self.loaded.values() if lo.source.path == key), None)
        if current is not None and current.source.sha256 == source.sha256:
            if self._table(current.name) == current.config:
                return None  # unchanged
            return await self._reconfigure(current)
        if self.refused.get(key, ("", ""))[0] == source.sha256:
            return None  # this very version was refused already
        live_states = await self._live_states()
        try:
            first = await asyncio.to_thread(validate, source,
                                            dict(self.settings.config.plugins.config),
                                            live_states)
            live = self.loaded.get(first.name)
            if live is not None and live.source.path != key:
                raise Refused(f"plugin {first.name} is already loaded from {live.source.path}")
            if live is not None and live.version == first.version:
                raise Refused(f"version {first.version!r} is the version already serving; "
                              "change `version` to upgrade")
            await self._swap(first.name, source)
        except Refused as exc:
            return self._refuse(key, str(exc), source.sha256)
        old = f" (was v{live.version})" if live is not None else ""
        self.loaded[first.name] = Loaded(first.name, first.version, first.priority,
                                         first.hooks, source, self._table(first.name))
        self.refused.pop(key, None)
        log.info("plugin %s v%s loaded from %s%s (sha256 %s)", first.name, first.version,
                 key, old, source.sha256[:12])
        return f"plugin {first.name} v{first.version}{old}"

    def _table(self, name: str) -> dict[str, Any]:
        return dict(self.settings.config.plugins.config.get(name, {}))

    async def _reconfigure(self, current: Loaded) -> str | None:
        """Same version, new [plugins.config.NAME] table: swap it in the same way (its
        state carries over through migrate from the same version)."""
        try:
            await self._swap(current.name, current.source)
        except Refused as exc:
            return self._refuse(current.source.path, f"new config refused: {exc}")
        current.config = self._table(current.name)
        log.info("plugin %s v%s: config table applied", current.name, current.version)
        return f"plugin {current.name} v{current.version} reconfigured"

    def _refuse(self, key: str, why: str, sha256: str = "") -> str:
        log.error("plugin file %s refused, the version serving stays: %s", key, why)
        self.refused[key] = (sha256, why)
        return f"refused {key}: {why}"

    async def _live_states(self) -> dict[str, dict[str, Any]]:
        """The serving versions' state as the workers hold it now (a fresh snapshot), for
        the sandbox to migrate a copy of; the periodic snapshot if no worker answers."""
        replies = await self._broadcast(swap.SNAPSHOT, "", {})
        for worker, reply in replies.items():
            if reply.get("ok"):
                self.snapshots[worker] = reply.get("plugins") or {}
        live: dict[str, dict[str, Any]] = {}
        for name, lo in self.loaded.items():
            for worker in sorted(self.snapshots):
                held = self.snapshots[worker].get(name)
                if held is not None and held.get("version") == lo.version:
                    live[name] = held
                    break
        return live

    async def _swap(self, name: str, source: PluginSource) -> None:
        spec = self.spec(source, name)
        prepared = await self._broadcast(swap.PREPARE, name, {"spec": spec})
        failed = [f"{w}: {r.get('error')}" for w, r in prepared.items() if not r.get("ok")]
        if failed:
            await self._broadcast(swap.ABORT, name, {})
            raise Refused("a gateway worker could not take it, so none did: "
                          + "; ".join(failed))
        committed = await self._broadcast(swap.COMMIT, name, {})
        for worker, reply in committed.items():
            if not reply.get("ok"):
                log.critical("plugin %s: %s failed to commit after preparing: %s; "
                             "restarting it", name, worker, reply.get("error"))

    async def _broadcast(self, kind: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        """Send one step to every READY gateway worker and wait for every reply."""
        asks = {}
        for worker in self.gateway_workers():
            identity = worker.identity
            if identity is None:
                continue  # it gets the committed set from its spec when it starts
            token = next(self._tokens)
            future: asyncio.Future[dict[str, Any]] = \
                asyncio.get_running_loop().create_future()
            self._replies[token] = future
            self.bus.send(identity, {"k": kind, "token": token, "name": name, **body})
            asks[worker.id] = (token, future)
        replies: dict[str, Any] = {}
        for worker_id, (token, future) in asks.items():
            try:
                replies[worker_id] = await asyncio.wait_for(future, STEP_TIMEOUT)
            except TimeoutError:
                self._replies.pop(token, None)
                replies[worker_id] = {"ok": False, "error": f"no answer in {STEP_TIMEOUT:g}s"}
        return replies

    async def watch(self) -> None:
        """Rescan on file drops.  Editors' temp files are ignored; the documented way to
        drop a file is to write .NAME.py.tmp, then rename it to NAME.py."""
        dirs = [str(d) for d in plugin_dirs(self.settings) if d.is_dir()]
        if not dirs or not self.settings.config.plugins.watch:
            return
        async for changes in watchfiles.awatch(*dirs, debounce=400, step=100,
                                               watch_filter=_plugin_change):
            log.debug("plugin dirs changed: %s", changes)
            await self.rescan()

    def status(self) -> dict[str, Any]:
        return {"loaded": [{"name": lo.name, "version": lo.version, "priority": lo.priority,
                            "hooks": lo.hooks, "path": lo.source.path,
                            "sha256": lo.source.sha256} for lo in self.loaded.values()],
                "refused": {path: why for path, (_, why) in self.refused.items()}}


def _plugin_change(change: watchfiles.Change, path: str) -> bool:
    return is_plugin_file(Path(path))
