"""The master process: root of the supervision tree, control endpoint, systemd liaison.

Modelled on gunicorn's arbiter: signal handlers only wake the loop (asyncio's self-pipe)
and dispatch to ``handle_<signal>``; the work is a few verbs (start the tree, tick
liveness, reload, stop).  Reload itself is master/reconfigure.py's; the state dir's lock
and control file are master/state_dir.py's; `status` is master/snapshot.py's.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import logging
import os
import resource
import secrets
import shutil
import signal
import ssl
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import msgspec
import zmq

from daemon import __version__, config, logs, metrics
from daemon.a2a.cards import CardKeeper, role_peers
from daemon.audit.link import AuditLink
from daemon.control.server import ControlServer
from daemon.front.auth import Authenticator, ensure_admin_token
from daemon.front.http import HttpFront
from daemon.front.line_guard import LineGuard
from daemon.front.quarantine import Quarantine, QuarantineLimits
from daemon.front.resource_subs import ResourceWatchers
from daemon.front.switchboard import Limits, Switchboard
from daemon.front.tcp import serve_tcp
from daemon.front.zap import ZapHandler
from daemon.front.zmq_router import AgentRouter
from daemon.hotswap import warm
from daemon.hotswap.manager import PluginManager
from daemon.ipc import curve, messages
from daemon.ipc.bus import WorkerBus
from daemon.master import runtime_files, state_dir, tree
from daemon.master.reconfigure import LogLevel, Reconfigurable, Reconfiguration
from daemon.master.shards import GatewayShards
from daemon.master.snapshot import snapshot
from daemon.master.state_dir import CannotStart
from daemon.master.upstreams import UpstreamDirectory
from daemon.supervision import reaper
from daemon.supervision.child import StartFailed, TreeContext
from daemon.supervision.overrun_watch import OverrunWatch
from daemon.supervision.sdnotify import Notifier
from daemon.supervision.spec import SupervisorSpec, check_tree
from daemon.supervision.supervisor import Supervisor, worker_specs
from daemon.supervision.worker_child import WorkerChild
from daemon.supervision.worker_process import WorkerProcess, prepare_forkserver

log = logging.getLogger("master")

class Master:
    def __init__(self, settings: config.Settings, spec: SupervisorSpec | None = None,
                 config_arg: str | None = None) -> None:
        self.spec = spec or tree.build(settings)
        check_tree(self.spec)
        self.custom_tree = spec is not None  # reload only reshapes the built-in tree
        self.notifier = Notifier()
        self.reconfigure = Reconfiguration(settings, config_arg, self.notifier, self._checks,
                                           self._reconfigurable,
                                           lambda: len(self.root.workers()))
        self.token = secrets.token_urlsafe(32)
        self.started_at = time.monotonic()
        self.exit_code = 0
        self.root: Supervisor
        self._stop = asyncio.Event()
        self._brutal = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._last_watchdog = 0.0
        self.audit_state: dict[str, Any] = {}
        self.http: HttpFront | None = None

    # -- task ownership: nothing runs unowned, no exception vanishes ------------------

    def own(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background task failed", exc_info=task.exception())

    # -- the main sequence ------------------------------------------------------------

    async def run(self) -> int:
        s = self.settings
        os.umask(0o077)
        state_dir.make(s)
        lock = state_dir.lock(s.state_dir)
        # Each resource is released in reverse order, whether the daemon stops or fails to
        # start; what it leaves in the runtime dir goes once every process of it is gone.
        async with contextlib.AsyncExitStack() as held:
            held.callback(os.close, lock)
            held.callback(runtime_files.remove, s, self.spec)
            held.callback(self.notifier.close)
            held.callback(s.control_file.unlink, missing_ok=True)
            await self._serve(held)
        log.info("stopped (exit code %d)", self.exit_code)
        return self.exit_code

    async def _serve(self, held: contextlib.AsyncExitStack) -> None:
        """Start everything, each with its release on ``held``; serve until stopped."""
        s = self.settings
        reaper.become_subreaper()
        _raise_open_files_limit()
        metrics.prepare(runtime_files.metrics_dir(s))  # before any worker: they inherit it
        # the plugin files as they are now: their imports and compiled code are preloaded
        prepare_forkserver((w.target for w in worker_specs(self.spec)), [warm.__name__],
                           {warm.WARM_ENV: os.pathsep.join(map(str, config.plugin_dirs(s)))})
        ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        held.callback(ctx.term)
        keys = self._curve(ctx, held)
        bus = WorkerBus(ctx, s.bus_endpoint, keys.bus_server)
        held.callback(bus.close)
        self.audit = AuditLink.from_options(ctx, tree.audit_link_options(s), "master")
        held.callback(self.audit.close)
        bus.on(messages.AuditStatus, self._audit_state)  # the audit process, once a second
        self.shards = GatewayShards(s, bus, resizable=not self.custom_tree)
        self.cards = CardKeeper(s.config.a2a, s.state_dir,
                                lambda learned: self.shards.learned("a2a_cards", learned),
                                role_peers(s))
        self.board = Switchboard(bus, self.gateway_workers,
                                 Authenticator(s, ensure_admin_token(s.state_dir)),
                                 Limits.from_settings(s), self.audit,
                                 Quarantine(QuarantineLimits.from_settings(s)))
        slot_dir = s.runtime_dir / "slots"
        shutil.rmtree(slot_dir, ignore_errors=True)
        slot_dir.mkdir(mode=0o700)
        self.plugins = PluginManager(s, bus, self.gateway_workers)
        self.upstreams = UpstreamDirectory(bus, self.gateway_workers, self.board.notify_agents,
                                           tree.UPSTREAM_TARGET, self._upstream_up)
        self.board.resources = ResourceWatchers(bus, self.upstreams, self.board.deliver_update)
        self.root = Supervisor(self.spec, TreeContext(
            bus=bus, bus_endpoint=bus.endpoint, master_pid=os.getpid(),
            log_level=s.config.daemon.log_level, on_root_failure=self._root_failed,
            spawn=self.own, on_worker_ready=self._worker_ready,
            on_worker_gone=self._worker_gone, boot_options=self.plugins.boot_options,
            slot_dir=slot_dir, on_subtree_change=self.upstreams.subtree_changed,
            bus_curve=keys.bus_client, supervision=s.config.supervision))
        self.shards.attach(self.root)
        try:
            await self.plugins.start()  # validated before any worker starts: they boot with it
        except config.ConfigError as exc:  # a plugin table that does not fit its schema
            raise CannotStart(str(exc)) from None  # what is held is released on the way out
        control = ControlServer(ctx, s.control_endpoint, self.token, self, keys.control_server)
        held.callback(control.close)
        held.push_async_callback(self._cancel_tasks)  # the ticker, commands, watchers
        self.lines = LineGuard(s.config.listen.line_timeout, s.config.listen.max_pending_bytes)
        self.listening = await self._listen(ctx, held, keys.server)
        state_dir.publish_control_file(s.control_file, control.endpoint, self.token,
                                       self.listening)
        self._install_signal_handlers()
        self.own(self._tick())
        self.own(self.plugins.watch())
        self.own(self.cards.run())
        self.overruns = OverrunWatch(
            self.gateway_workers, s.config.plugins.hook_grace_ms / 1000,
            lambda _child, running: self.board.overran(running.seq, running.plugin), self.own)
        self.own(self.overruns.run(min(0.02, s.config.plugins.budget_ms / 4000)))
        log.info("workingagents %s starting: config %s, state %s, control %s, agents on "
                 "tcp %s and zmq %s%s%s", __version__, s.source or "built-in defaults",
                 s.state_dir, control.endpoint, self.listening["tcp"], self.listening["zmq"],
                 f" and zmq_curve {self.listening['zmq_curve']}"
                 if self.listening["zmq_curve"] else "",
                 f", http{'s' if s.config.listen.tls_cert else ''} {self.listening['http']}"
                 if self.listening["http"] else "")
        await self._start_tree()
        await self._stop.wait()
        self.notifier.stopping()
        log.info("stopping%s", " (brutal)" if self._brutal else "")
        if self._brutal:
            self._kill_all()
        await self.root.stop()

    def _curve(self, ctx: zmq.Context[zmq.Socket[bytes]],
               held: contextlib.AsyncExitStack) -> curve.DaemonKeys:
        """The daemon's Curve keys (made at the first start), and the ZAP handler that
        vets Curve clients if any endpoint speaks Curve; before any socket binds."""
        s = self.settings
        try:
            keys = curve.DaemonKeys.ensure(s.state_dir, bus_endpoint=s.bus_endpoint,
                                           control_endpoint=s.control_endpoint,
                                           agents=bool(s.config.listen.zmq_curve))
        except (OSError, ValueError) as exc:
            raise CannotStart(f"cannot use the Curve keys in {curve.directory(s.state_dir)}: "
                              f"{getattr(exc, 'strerror', None) or exc}") from None
        if keys.in_use:
            zap = ZapHandler(ctx, keys.client.public,
                             lambda key: self.board.auth.agent_for_curve_key(key) is not None)
            held.callback(zap.close)
        return keys

    async def _listen(self, ctx: zmq.Context[zmq.Socket[bytes]],
                      held: contextlib.AsyncExitStack,
                      curve_keys: curve.KeyPair) -> dict[str, str | None]:
        """Open the agent and metrics listeners; a busy or bad address is one line that
        names its config key."""
        listen = self.settings.config.listen
        scrape_at = self.settings.config.metrics.listen
        tcp = router = curve_router = scrape = None
        http = ""
        try:
            key, address = "listen.tcp", listen.tcp
            if address:
                tcp = await serve_tcp(self.board, address, listen.max_message_bytes,
                                      self.lines)
                held.callback(tcp.close)
            key, address = "listen.zmq", listen.zmq
            if address:
                router = AgentRouter(ctx, address, self.board,
                                     listen.max_message_bytes)
                held.callback(router.close)
            key, address = "listen.zmq_curve", listen.zmq_curve
            if address:
                curve_router = AgentRouter(ctx, address, self.board, listen.max_message_bytes,
                                           curve_keys)
                held.callback(curve_router.close)
            key, address = "listen.http", listen.http
            if address:
                self.http = HttpFront(self.board, self.settings, self.http_health, self.cards)
                held.push_async_callback(self.http.close)
                http = await self.http.start(address, listen.tls_cert, listen.tls_key)
            key, address = "metrics.listen", scrape_at
            if address:
                scrape = metrics.serve(address)
                held.callback(scrape[2].shutdown)
        except (OSError, ValueError, zmq.ZMQError, ssl.SSLError) as exc:
            errno = getattr(exc, "errno", None)
            reason = os.strerror(errno) if errno else str(exc)  # not the library's wording
            raise CannotStart(f"cannot listen on {address} ({key}): {reason}") from None
        return {"tcp": "{}:{}".format(*tcp.sockets[0].getsockname()[:2]) if tcp else None,
                "zmq": router.endpoint if router else None,
                "zmq_curve": curve_router.endpoint if curve_router else None,
                "http": http or None,
                "metrics": "{}:{}".format(*scrape[:2]) if scrape else None}

    async def _cancel_tasks(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _start_tree(self) -> None:
        start = self.own(self.root.start())
        stop = asyncio.ensure_future(self._stop.wait())
        await asyncio.wait({start, stop}, return_when=asyncio.FIRST_COMPLETED)
        stop.cancel()
        if not start.done():
            start.cancel()  # asked to stop while still starting
            await asyncio.gather(start, return_exceptions=True)
            return
        exc = start.exception()
        if isinstance(exc, StartFailed):
            self._root_failed(f"the supervision tree could not start: {exc}")
            return
        workers = len(self.root.workers())
        self.notifier.ready(f"serving; {workers} workers")
        log.info("ready: %d workers in %.0f ms", workers,
                 (time.monotonic() - self.started_at) * 1000)

    def _audit_state(self, _identity: bytes, message: messages.AuditStatus) -> None:
        self.audit_state = msgspec.structs.asdict(message)

    def gateway_workers(self) -> list[WorkerChild]:
        """The workers that serve agent calls, in a stable order (the shards)."""
        return self.shards.workers()

    def _worker_ready(self, child: WorkerChild) -> None:
        if self.plugins.stale(child):  # it started while a plugin swap was under way
            self.own(self.plugins.catch_up(child))
        self.board.worker_ready(child)
        self.upstreams.worker_ready(child)

    def _upstream_up(self, name: str) -> None:
        if self.board.resources is not None:
            self.board.resources.upstream_up(name)

    def _worker_gone(self, child: WorkerChild, proc: WorkerProcess) -> None:
        self.board.worker_gone(child, proc.identity, proc.culprit)
        self.upstreams.worker_gone(child, proc.identity)

    def _root_failed(self, reason: str) -> None:
        log.critical("giving up: %s; exiting with status 1", reason)
        self.exit_code = 1
        self._stop.set()

    def request_stop(self, brutal: bool = False) -> None:
        if brutal and self._stop.is_set():
            self._kill_all()  # a graceful stop is already waiting on shutdown timeouts
        self._brutal = self._brutal or brutal
        self._stop.set()

    def _kill_all(self) -> None:
        for worker in self.root.workers():
            if worker.proc is not None:
                worker.proc.kill()

    # -- signals (handlers only dispatch; the loop does the work) ---------------------

    def _install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig, handler in ((signal.SIGTERM, self.handle_term), (signal.SIGINT, self.handle_int),
                             (signal.SIGHUP, self.handle_hup)):
            loop.add_signal_handler(sig, handler)
        # uvloop keeps SIGCHLD for its own subprocess support, which the master never uses.
        signal.signal(signal.SIGCHLD, lambda *_: loop.call_soon_threadsafe(self.handle_chld))

    def handle_term(self) -> None:
        self.request_stop()

    def handle_int(self) -> None:
        if self._stop.is_set():
            log.warning("second interrupt: killing every worker now")
        self.request_stop(brutal=self._stop.is_set())

    def handle_hup(self) -> None:
        self.own(self._reload_quietly())

    async def _reload_quietly(self) -> None:
        await self.reload()

    def handle_chld(self) -> None:
        reaper.reap_orphans()

    # -- liveness, heartbeats, watchdog -------------------------------------------------

    async def _tick(self) -> None:
        hb = self.settings.config.supervision.heartbeat_interval
        wd = self.notifier.watchdog_interval
        period = min(hb, wd) / 2 if wd else hb / 2
        last_hb = last_reap = 0.0
        last_tick = judge_from = time.monotonic()
        while True:
            await asyncio.sleep(period)
            now = time.monotonic()
            if now - last_tick > period + hb:
                # the master's own loop stalled (a long callback, the VM paused): the
                # workers' heartbeats wait unread, so their silence says nothing yet
                log.warning("master loop stalled %.1fs; judging workers' liveness again "
                            "after a heartbeat timeout", now - last_tick - period)
                judge_from = now + self.settings.config.supervision.heartbeat_timeout
            last_tick = now
            if now - last_hb >= hb:
                self.root.tree.bus.heartbeat_all()
                last_hb = now
            if now >= judge_from:
                self.root.check_liveness(now)
            self.board.expire(now)
            self.board.quarantine.expire(now)
            self.board.sweep_idle(now, self.board.limits.idle_timeout)
            self.lines.sweep(now)
            if now - last_reap >= 5.0:  # backstop in case a SIGCHLD was coalesced away
                reaper.reap_orphans()
                last_reap = now
            if wd and now - self._last_watchdog >= wd and self.root.healthy():
                self.notifier.watchdog()
                self._last_watchdog = now

    # -- reload and status (the work is in reconfigure and snapshot) ----------------------

    async def reload(self) -> dict[str, Any]:
        return await self.reconfigure.reload()

    def _checks(self) -> list[Callable[[config.Settings], Awaitable[None]]]:
        """What may refuse a reload, asked before anything applies."""
        return [self.plugins.check_tables]  # a plugin table that does not fit its schema

    def _reconfigurable(self) -> list[Reconfigurable]:
        """Who takes new settings at run time, in the order they apply them."""
        return [LogLevel(), self.root, self.board, self.lines, self.shards, self.overruns,
                self.plugins, self.cards, *([self.http] if self.http is not None else [])]

    def http_health(self) -> dict[str, Any]:
        """For GET /healthz: the health `status` shows, and whether calls can be served
        at all (a gateway worker READY, the audit log writable, not stopping)."""
        found = self.snapshot()
        serving = (not self.stopping and not (found.get("audit") or {}).get("failing")
                   and any(w.identity is not None for w in self.gateway_workers()))
        return {"health": found["health"], "reasons": found["reasons"], "serving": serving}

    @property
    def settings(self) -> config.Settings:
        return self.reconfigure.settings

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def snapshot(self) -> dict[str, Any]:
        return snapshot(self)


def _spare_workers_the_main_script() -> None:
    """Started from a console script, multiprocessing would re-run that script in every
    worker (its __main__ fix-up), paying the CLI's imports on each restart: ~50 ms instead
    of ~6 ms.  It skips modules named "*.__main__", so name ours that way."""
    main = sys.modules["__main__"]
    if getattr(main, "__spec__", None) is None:
        main.__spec__ = importlib.util.find_spec("daemon.__main__")


def _raise_open_files_limit() -> None:
    """Every agent connection is a file: the soft limit (often 1024) would refuse agents
    long before memory runs short, so take the hard limit (systemd: LimitNOFILE=)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    log.info("open files: limit %s%s", "unlimited" if hard == resource.RLIM_INFINITY else hard,
             f" (raised from {soft})" if soft != hard else "")


def serve(settings: config.Settings, spec: SupervisorSpec | None = None,
          config_arg: str | None = None, log_format: str | None = None) -> int:
    """Run a master in the foreground until it is stopped; returns the exit status."""
    import uvloop

    logs.configure(settings.config.daemon.log_level, "master",
                   log_format or settings.config.daemon.log_format)
    _spare_workers_the_main_script()
    try:
        return uvloop.run(Master(settings, spec, config_arg).run())
    except CannotStart as exc:
        log.error("%s", exc)
        return 1

