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

Each committed version is also kept in the state dir (kept.py): a file refused while
nothing of it serves (a daemon starting with a broken file in place) falls back to the
last accepted version of that plugin, so a policy never silently disappears.  A plugin's
[plugins.config.NAME] table is checked against its ``config_schema`` wherever a version
is validated; at start and at reload a table that does not fit is a config error.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import watchfiles

from daemon import metrics
from daemon.config import ConfigError, Settings, plugin_dirs
from daemon.hotswap.kept import KeptVersions
from daemon.hotswap.plugin_config import TableRefused
from daemon.hotswap.sandbox import Verdict, validate
from daemon.hotswap.source import PluginSource, Refused, is_plugin_file, read_source
from daemon.ipc import messages
from daemon.ipc.bus import WorkerBus
from daemon.supervision.worker_child import WorkerChild

log = logging.getLogger("plugins")
STEP_TIMEOUT = 15.0
REPLY_CHECK = 0.1  # how often a wait for a reply checks that the worker is still there
# The answer of a worker that died or was replaced during a step; never on the wire.
GONE = messages.PluginReply(token=0, ok=True)


@dataclass
class Loaded:
    name: str
    version: int | str
    priority: int
    hooks: list[str]
    source: PluginSource
    config: dict[str, Any]  # its [plugins.config.NAME] table when it was swapped in
    accepted: str  # when this version was first committed (kept.py)


@dataclass(frozen=True)
class Refusal:
    sha256: str  # of the refused bytes, or "" if unread
    why: str
    tables: dict[str, Any] | None = None  # the [plugins.config] it was checked with


class Unanswered(Refused):
    """A swap that a worker never answered (neither took nor refused the version)."""


class PluginManager:
    def __init__(self, settings: Settings, bus: WorkerBus,
                 gateway_workers: Callable[[], list[WorkerChild]]) -> None:
        self.settings = settings
        self.bus = bus
        self.gateway_workers = gateway_workers
        self.loaded: dict[str, Loaded] = {}
        self.refused: dict[str, Refusal] = {}  # plugin file path -> why
        self.kept = KeptVersions(settings.state_dir)
        self._misfit_is_fatal = False  # during the first scan: a bad table stops the start
        self.snapshots: dict[str, dict[str, Any]] = {}  # worker id -> {name: state}
        # what each gateway worker was started with: (name -> (sha256, table)); a worker
        # that started while a swap ran may have booted with the set before it
        self._booted: dict[str, dict[str, tuple[str, Any]]] = {}
        self._lock = asyncio.Lock()
        self._tokens = itertools.count(1)
        self._replies: dict[int, asyncio.Future[messages.PluginReply]] = {}
        bus.on(messages.PluginReply, self._on_reply)
        bus.on(messages.PluginState, self._on_state)

    # -- what the workers tell us -----------------------------------------------------

    def _on_reply(self, identity: bytes, message: messages.PluginReply) -> None:
        future = self._replies.pop(message.token, None)
        if future is not None and not future.done():
            future.set_result(message)

    def _on_state(self, identity: bytes, message: messages.PluginState) -> None:
        worker = identity.decode().partition("#")[0]
        self.snapshots[worker] = message.plugins

    # -- specs: what a gateway worker needs to host a version ---------------------------

    def spec(self, source: PluginSource, name: str,
             table: dict[str, Any] | None = None) -> dict[str, Any]:
        return {"name": name, "path": source.path, "sha256": source.sha256,
                "code": base64.b64encode(source.code).decode(),
                "config": self._table(name) if table is None else table,
                "budget_ms": self.settings.config.plugins.budget_ms}

    def worker_plugins(self, worker: str) -> list[dict[str, Any]]:
        """The committed plugins for a worker's (re)start, with its latest state: the
        table each was committed with (a refused new table never reaches a restart)."""
        out = []
        for name, loaded in sorted(self.loaded.items()):
            spec = self.spec(loaded.source, name, loaded.config)
            snap = self.snapshots.get(worker, {}).get(name)
            if snap is not None:
                spec.update(state=snap.get("state"), state_version=snap.get("version"))
            out.append(spec)
        return out

    def boot_options(self, worker: WorkerChild) -> dict[str, Any]:
        """For a gateway worker's (re)start: the committed plugins, its latest state."""
        if worker not in self.gateway_workers():
            return {}
        self._booted[worker.id] = self._serving_set()
        return {"plugins": self.worker_plugins(worker.id),
                "snapshot_interval": self.settings.config.plugins.snapshot_interval}

    def _serving_set(self) -> dict[str, tuple[str, Any]]:
        return {name: (lo.source.sha256, lo.config) for name, lo in self.loaded.items()}

    def stale(self, worker: WorkerChild) -> bool:
        """A gateway worker now READY that booted with another set than the one serving
        (it started while a swap was under way)."""
        booted = self._booted.get(worker.id)
        return booted is not None and booted != self._serving_set()

    async def catch_up(self, worker: WorkerChild) -> None:
        """Bring one worker to the serving set, as a swap would have (state migrates)."""
        async with self._lock:
            booted, identity = self._booted.get(worker.id, {}), worker.identity
            if identity is None:
                return  # gone again: its next start boots with the serving set
            for name, lo in sorted(self.loaded.items()):
                if booted.get(name) == (lo.source.sha256, lo.config):
                    continue
                spec = self.spec(lo.source, name, lo.config)
                prepared = await self._broadcast(
                    partial(messages.PluginPrepare, name=name, spec=spec), [worker])
                if all(r.ok for r in prepared.values()):
                    await self._broadcast(partial(messages.PluginCommit, name=name),
                                          [worker])
                    log.info("%s started during a swap: plugin %s v%s caught up", worker.id,
                             name, lo.version)
                else:
                    log.error("%s could not take plugin %s v%s: %s; restarting it",
                              worker.id, name, lo.version, prepared)
                    if worker.proc is not None:
                        worker.proc.kill()
                    return
            for name in sorted(set(booted) - set(self.loaded)):
                await self._broadcast(partial(messages.PluginUnload, name=name),
                                      [worker])
            self._booted[worker.id] = self._serving_set()

    # -- the scan and the swap -------------------------------------------------------

    async def start(self) -> None:
        """The first scan, before any worker starts (they boot with its outcome).  A
        table that does not fit its plugin's schema stops the start, like any config
        error; a refused file serves its kept version, if there is one."""
        self._misfit_is_fatal = True
        try:
            await self.rescan()
        finally:
            self._misfit_is_fatal = False

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
                    await self._broadcast(partial(messages.PluginUnload, name=name))
                    del self.loaded[name]
                    changes.append(f"plugin {name} unloaded ({loaded.source.path} is gone)")
                    log.info("plugin %s unloaded: %s was removed", name, loaded.source.path)
            self.kept.forget_all_but(set(seen))
            metrics.plugins_loaded({n: str(p.version) for n, p in self.loaded.items()})
            return changes

    async def apply(self, settings: Settings) -> list[str]:
        """A reload: the new dirs and tables, then a rescan; check_tables first."""
        self.settings = settings
        return await self.rescan()

    async def check_tables(self, new: Settings) -> None:
        """Before a reload changes anything: each serving plugin's new table must fit its
        schema, or the reload is refused (ConfigError) and the running config stays.  A
        plugin whose file changed too is checked with its new version, in the rescan."""
        async with self._lock:
            for lo in list(self.loaded.values()):
                table = dict(new.config.plugins.config.get(lo.name, {}))
                if table == lo.config or _changed_on_disk(lo.source):
                    continue
                try:
                    await asyncio.to_thread(validate, lo.source, {lo.name: table})
                except TableRefused as exc:
                    raise _misfit_error(new, exc, lo.source.path) from None
                except Refused:
                    pass  # not the table's fault: the swap refuses it with the reason

    async def check(self, source: PluginSource) -> dict[str, Any]:
        """`plugins check` with the daemon running: the hot loader's checks, migrate on a
        copy of the live state included, with the tables in force; nothing is swapped."""
        async with self._lock:
            try:
                verdict, migrated = await self._validate(source, None)
            except Refused as exc:
                return {"ok": False, "error": str(exc)}
        return {"ok": True, "name": verdict.name, "version": verdict.version,
                "priority": verdict.priority, "hooks": verdict.hooks,
                "migrated_from": migrated}

    async def _consider(self, key: str, path: Path) -> str | None:
        try:
            source = read_source(path)
        except Refused as exc:
            return await self._refused(key, Refusal("", str(exc)))
        current = self._serving(key)
        if current is not None and current.source.sha256 == source.sha256:
            if self._table(current.name) == current.config:
                self.refused.pop(key, None)  # a refused version or table was put back
                return None  # unchanged
            return await self._reconfigure(current)
        tables = dict(self.settings.config.plugins.config)
        refused = self.refused.get(key)
        if refused is not None and refused.sha256 == source.sha256 \
                and refused.tables == tables:
            return None  # this very version was refused already, with these tables
        try:
            verdict, _ = await self._validate(source, key)
            await self._swap(verdict.name, source)
        except Refused as exc:
            self._misfit(exc, key)
            # a worker that did not answer says nothing of the file: try it again
            sha256 = "" if isinstance(exc, Unanswered) else source.sha256
            return await self._refused(key, Refusal(sha256, str(exc), tables))
        old = self.loaded.get(verdict.name)
        self._commit(verdict, source)
        self.refused.pop(key, None)
        was = f" (was v{old.version})" if old is not None else ""
        log.info("plugin %s v%s loaded from %s%s (sha256 %s)", verdict.name,
                 verdict.version, key, was, source.sha256[:12])
        return f"plugin {verdict.name} v{verdict.version}{was}"

    async def _validate(self, source: PluginSource,
                        key: str | None) -> tuple[Verdict, int | str | None]:
        """The hot loader's checks of a version (``key``: the file it would serve from);
        returns the verdict and the live version whose state migrate was tried on."""
        live_states = await self._live_states()
        verdict = await asyncio.to_thread(validate, source,
                                          dict(self.settings.config.plugins.config),
                                          live_states)
        live = self.loaded.get(verdict.name)
        if key is not None and live is not None and live.source.path != key:
            raise Refused(f"plugin {verdict.name} is already loaded from {live.source.path}")
        if live is not None and live.version == verdict.version:
            raise Refused(f"version {verdict.version!r} is the version already serving; "
                          "change `version` to upgrade")
        migrated = live_states.get(verdict.name)
        return verdict, (migrated or {}).get("version")

    def _commit(self, verdict: Verdict, source: PluginSource) -> None:
        """A version the workers took: record it, and keep its bytes for a restart."""
        try:
            accepted = self.kept.keep(verdict.name, verdict.version, source)
        except OSError as exc:
            log.error("plugin %s v%s serves, but could not be kept in %s: %s", verdict.name,
                      verdict.version, self.kept.dir, exc)
            accepted = "now (not kept)"
        self.loaded[verdict.name] = Loaded(verdict.name, verdict.version, verdict.priority,
                                           verdict.hooks, source, self._table(verdict.name),
                                           accepted)

    async def _refused(self, key: str, refusal: Refusal) -> str:
        """Record a refused file.  If nothing of it serves (the daemon started with it in
        place, or its plugin was never loaded here), serve its kept version instead."""
        self.refused[key] = refusal
        serving = self._serving(key)
        if serving is not None:
            log.error("plugin file %s refused, the version serving stays (%s v%s): %s", key,
                      serving.name, serving.version, refusal.why)
            return f"refused {key}: {refusal.why}"
        log.error("plugin file %s refused: %s", key, refusal.why)
        fallback = await self._fall_back(key)
        return f"refused {key}: {refusal.why}" + (f"; {fallback}" if fallback else "")

    async def _fall_back(self, key: str) -> str | None:
        kept = self.kept.find(key)
        if kept is None:
            log.error("plugin file %s: no accepted version of it is kept; nothing of it "
                      "serves", key)
            return None
        if kept.name in self.loaded:
            return None  # that plugin serves from another file
        source = PluginSource(key, kept.source.code, kept.source.sha256)
        try:
            verdict, _ = await self._validate(source, key)
            await self._swap(verdict.name, source)
        except Refused as exc:
            self._misfit(exc, key)
            log.error("plugin file %s: its kept version (%s v%s) is refused too: %s", key,
                      kept.name, kept.version, exc)
            return None
        self._commit(verdict, source)
        log.warning("plugin file %s refused: serving the kept %s v%s (accepted %s) instead",
                    key, verdict.name, verdict.version, self.loaded[verdict.name].accepted)
        return f"serving the kept {verdict.name} v{verdict.version} instead"

    def _misfit(self, exc: Refused, key: str) -> None:
        """At start, a table that does not fit its plugin is a config error (one line,
        exit 1); later, it refuses that version and the serving one stays."""
        if self._misfit_is_fatal and isinstance(exc, TableRefused):
            raise _misfit_error(self.settings, exc, key) from None

    def _serving(self, key: str) -> Loaded | None:
        return next((lo for lo in self.loaded.values() if lo.source.path == key), None)

    def _table(self, name: str) -> dict[str, Any]:
        return dict(self.settings.config.plugins.config.get(name, {}))

    async def _reconfigure(self, current: Loaded) -> str | None:
        """Same version, new [plugins.config.NAME] table: swap it in the same way (its
        state carries over through migrate from the same version)."""
        try:
            await self._swap(current.name, current.source)
        except Refused as exc:
            return await self._refused(current.source.path,
                                       Refusal(current.source.sha256,
                                               f"new config refused: {exc}"))
        current.config = self._table(current.name)
        self.refused.pop(current.source.path, None)
        log.info("plugin %s v%s: config table applied", current.name, current.version)
        return f"plugin {current.name} v{current.version} reconfigured"

    async def _live_states(self) -> dict[str, dict[str, Any]]:
        """The serving versions' state as the workers hold it now (a fresh snapshot), for
        the sandbox to migrate a copy of; the periodic snapshot if no worker answers."""
        replies = await self._broadcast(messages.PluginSnapshot)
        for worker, reply in replies.items():
            if reply.ok:
                self.snapshots[worker] = reply.plugins or {}
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
        prepared = await self._broadcast(partial(messages.PluginPrepare, name=name, spec=spec))
        failed = [f"{w}: {r.error}" for w, r in prepared.items() if not r.ok]
        if failed:
            await self._broadcast(partial(messages.PluginAbort, name=name))
            unanswered = all("no answer" in str(r.error) for r in prepared.values()
                             if not r.ok)
            raise (Unanswered if unanswered else Refused)(
                "a gateway worker could not take it, so none did: " + "; ".join(failed))
        took = [w for w in self.gateway_workers()
                if (r := prepared.get(w.id)) is not None and r.ok and r is not GONE]
        committed = await self._broadcast(partial(messages.PluginCommit, name=name),
                                          took)
        for worker, reply in committed.items():
            if not reply.ok:
                log.critical("plugin %s: %s failed to commit after preparing: %s; "
                             "restarting it", name, worker, reply.error)

    async def _broadcast(self, step: Callable[[int], messages.PluginStep],
                         workers: list[WorkerChild] | None = None
                         ) -> dict[str, messages.PluginReply]:
        """Send one step, ``step(token)``, to every READY gateway worker (or to
        ``workers``) and wait for every reply.  A worker that dies or is replaced
        meanwhile does not hold the swap up: it answers GONE (ok), and its replacement
        boots with the serving set (or catches up, if it started during the swap)."""
        asks = []
        for worker in self.gateway_workers() if workers is None else workers:
            identity = worker.identity
            if identity is None:
                continue  # it gets the committed set from its spec when it starts
            token = next(self._tokens)
            future: asyncio.Future[messages.PluginReply] = \
                asyncio.get_running_loop().create_future()
            self._replies[token] = future
            self.bus.send(identity, step(token))
            asks.append((worker, identity, token, future))
        return {worker.id: await self._reply(worker, identity, token, future)
                for worker, identity, token, future in asks}

    async def _reply(self, worker: WorkerChild, identity: bytes, token: int,
                     future: asyncio.Future[messages.PluginReply]) -> messages.PluginReply:
        deadline = time.monotonic() + STEP_TIMEOUT
        while True:
            try:
                return await asyncio.wait_for(asyncio.shield(future), REPLY_CHECK)
            except TimeoutError:
                if worker.identity != identity:  # it died, hung and was killed, or moved on
                    self._replies.pop(token, None)
                    return GONE
                if time.monotonic() > deadline:
                    self._replies.pop(token, None)
                    return messages.PluginReply(token, ok=False,
                                                error=f"no answer in {STEP_TIMEOUT:g}s")

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
                "refused": {path: r.why for path, r in self.refused.items()},
                "fallback": self._fallbacks()}

    def _fallbacks(self) -> dict[str, str]:
        """Refused file -> the earlier version of it that serves instead."""
        out = {}
        for path in self.refused:
            serving = self._serving(path)
            if serving is not None:
                out[path] = f"{serving.name} v{serving.version} (kept from {serving.accepted})"
        return out


def _misfit_error(settings: Settings, exc: TableRefused, path: str) -> ConfigError:
    """Worded like any config error: the file, the key, what was expected."""
    return ConfigError(f"{settings.source or 'built-in defaults'}: {exc} (the config_schema "
                       f"of {path})")


def _changed_on_disk(source: PluginSource) -> bool:
    try:
        return read_source(Path(source.path)).sha256 != source.sha256
    except Refused:
        return True


def _plugin_change(change: watchfiles.Change, path: str) -> bool:
    return is_plugin_file(Path(path))
