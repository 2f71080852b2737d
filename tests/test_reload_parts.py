"""A reload is checked whole, then each component applies its own part and says what it
changed; a refused reload applies nothing (real components, a real config file)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest
import zmq

from daemon import config
from daemon.front.auth import Authenticator, digest, ensure_admin_token
from daemon.front.line_guard import LineGuard
from daemon.front.quarantine import Quarantine, QuarantineLimits
from daemon.front.switchboard import Limits, Switchboard
from daemon.ipc.bus import WorkerBus
from daemon.master.reconfigure import LogLevel, Reconfiguration
from daemon.supervision.overrun_watch import OverrunWatch
from daemon.supervision.sdnotify import Notifier


def write(path: Path, text: str, daemon: str = "") -> config.Settings:
    path.write_text(f'[daemon]\nstate_dir = "{path.parent}"\n{daemon}' + text)
    return config.load(str(path))


def test_the_line_guard_takes_new_limits_and_says_so_only_when_they_change(tmp_path):
    settings = write(tmp_path / "a.toml", "[listen]\nline_timeout = 30.0\n")
    guard = LineGuard(30.0, settings.config.listen.max_pending_bytes)
    assert guard.apply(settings) == []
    changed = write(tmp_path / "a.toml", "[listen]\nline_timeout = 2.5\n")
    assert guard.apply(changed) == [f"tcp line limits 2.5s, {guard.max_pending_bytes} bytes"]
    assert guard.line_timeout == 2.5


def test_the_overrun_watch_takes_a_new_hook_grace(tmp_path):
    watch = OverrunWatch(list, 0.5, lambda child, running: None, asyncio.ensure_future)
    assert watch.apply(write(tmp_path / "a.toml", "")) == []
    assert watch.apply(write(tmp_path / "a.toml", "[plugins]\nhook_grace_ms = 250\n")) \
        == ["hook grace 250 ms"]
    assert watch.grace == 0.25


def test_the_master_log_level_follows_the_setting(tmp_path):
    root = logging.getLogger()
    was = root.level
    try:
        root.setLevel("INFO")
        assert LogLevel().apply(write(tmp_path / "a.toml", "")) == []
        debug = write(tmp_path / "a.toml", "", daemon='log_level = "debug"\n')
        assert LogLevel().apply(debug) == ["log_level debug"]
        assert root.level == logging.DEBUG
    finally:
        root.setLevel(was)


def test_a_switchboard_revokes_a_removed_agent_and_keeps_what_did_not_change(tmp_path):
    token = "alice-token"
    alice = (f'[roles.dev]\ntools = ["echo"]\n[agents.alice]\n'
             f'token_sha256 = "{digest(token)}"\nroles = ["dev"]\n')
    settings = write(tmp_path / "a.toml", alice)

    async def scenario() -> None:
        ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        bus = WorkerBus(ctx, f"ipc://{tmp_path}/bus.sock")
        try:
            board = Switchboard(bus, list, Authenticator(settings, ensure_admin_token(tmp_path)),
                                Limits.from_settings(settings), None,
                                Quarantine(QuarantineLimits.from_settings(settings)))
            assert board.apply(settings) == []
            assert board.auth.agent_for(token) is not None
            assert board.apply(write(tmp_path / "a.toml", "")) \
                == ["agents, roles and gateway limits"]
            assert board.auth.agent_for(token) is None
            idle = write(tmp_path / "a.toml", "[listen]\nidle_timeout = 5.0\n")
            assert board.apply(idle) == ["agents, roles and gateway limits"]
            assert board.limits.idle_timeout == 5.0
        finally:
            bus.close()
            ctx.term()
    asyncio.run(scenario())


@pytest.mark.parametrize("refusing", ["a fixed key", "a check"])
def test_a_refused_reload_applies_nothing_anywhere(tmp_path, refusing):
    path = tmp_path / "a.toml"
    settings = write(path, "[listen]\nline_timeout = 30.0\n")
    guard = LineGuard(30.0, settings.config.listen.max_pending_bytes)

    async def refuse(new: config.Settings) -> None:
        if refusing == "a check":
            raise config.ConfigError(f"{new.source}: key plugins.config.x: does not fit")

    reconfigure = Reconfiguration(settings, str(path), Notifier({}), lambda: [refuse],
                                  lambda: [guard], lambda: 0)
    moved = 'tcp = "127.0.0.1:7999"\n' if refusing == "a fixed key" else ""
    write(path, f"[listen]\nline_timeout = 2.0\n{moved}")
    answer = asyncio.run(reconfigure.reload())
    assert answer["ok"] is False
    assert guard.line_timeout == 30.0 and reconfigure.settings is settings
    assert reconfigure.last_reload is not None and reconfigure.last_reload.startswith("refused:")
    if refusing == "a fixed key":  # put back, the rest of the change goes through
        write(path, "[listen]\nline_timeout = 2.0\n")
        assert asyncio.run(reconfigure.reload())["changes"] == [
            f"tcp line limits 2s, {guard.max_pending_bytes} bytes"]
        assert guard.line_timeout == 2.0
