"""Policies never silently disappear or misfire: kept versions, config schemas, live checks."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from daemon.hotswap.plugin_config import TableRefused, plugin_config
from daemon.hotswap.source import load_class, read_source
from tests.conftest import CLI, wait_for, write_config
from tests.gateway_helpers import agent, gateway_config
from tests.plugin_versions import BROKEN, COUNTER_V1, COUNTER_V2
from tests.test_plugins import drop, loaded

BUNDLED = Path(__file__).parent.parent / "plugins"

NOCONVERT_V1 = '''
from daemon.plugin import Plugin, Deny

class NoConvert(Plugin):
    name = "noconvert"
    version = 1

    async def before_call(self, call):
        if call.tool == "sleep":
            return Deny("sleep is not allowed", "policy")
        return None
'''
NOCONVERT_V2_BROKEN = NOCONVERT_V1.replace("version = 1", "version = 2").replace(
    "async def before_call(self, call):", "async def before_call(self, call:")


@pytest.fixture
def plugin_dir(state_dir: Path) -> Path:
    d = state_dir / "plugins"
    d.mkdir(mode=0o755)
    return d


def serve(start_daemon, plugin_dir: Path, wait: bool = True, **tables):
    config = gateway_config()
    config["plugins"] = {"dirs": [str(plugin_dir)], "snapshot_interval": 0.2,
                         "config": tables}
    d = start_daemon(extra=config)
    if wait:
        d.wait_ready()
    return d


def stop(d) -> None:
    out = d.cli("stop")
    assert out.returncode == 0, out.stderr
    d.wait_exit()


def sleep_denied(d) -> bool:
    with agent(d, "bob") as bob:
        result = bob.call_tool("sleep", {"seconds": 0})
    return bool(result["isError"]) and "Denied by noconvert" in result["content"][0]["text"]


# -- a policy never silently disappears --------------------------------------------------

def test_a_file_refused_at_start_serves_its_last_accepted_version_and_status_says_so(
        start_daemon, plugin_dir):
    d = serve(start_daemon, plugin_dir)
    path = drop(plugin_dir, "noconvert", NOCONVERT_V1)
    wait_for(lambda: loaded(d).get("noconvert") == 1, 20, "noconvert v1 to load")
    assert sleep_denied(d)
    drop(plugin_dir, "noconvert", NOCONVERT_V2_BROKEN)
    wait_for(lambda: str(path) in d.status()["plugins"]["refused"], 20, "v2 to be refused")
    stop(d)

    d = serve(start_daemon, plugin_dir)
    status = d.status()
    assert loaded(d) == {"noconvert": 1}, "the kept v1 serves"
    assert "syntax error" in status["plugins"]["refused"][str(path)]
    assert status["plugins"]["fallback"][str(path)].startswith("noconvert v1 (kept from ")
    if "health" in status:  # computed by the master's snapshot (health/reasons)
        assert status["health"] == "degraded"
    assert sleep_denied(d), "the policy still denies after the restart"
    human = d.cli("status").stdout
    assert f"plugin REFUSED {path}: syntax error" in human
    assert "serving noconvert v1 (kept from " in human
    assert "serving the kept noconvert v1" in d.log()


def test_a_deleted_plugin_is_not_brought_back_by_its_kept_version(start_daemon, plugin_dir):
    d = serve(start_daemon, plugin_dir)
    path = drop(plugin_dir, "noconvert", NOCONVERT_V1)
    wait_for(lambda: loaded(d).get("noconvert") == 1, 20, "noconvert v1 to load")
    path.unlink()
    wait_for(lambda: "noconvert" not in loaded(d), 20, "noconvert to unload")
    stop(d)
    drop(plugin_dir, "noconvert", NOCONVERT_V2_BROKEN)

    d = serve(start_daemon, plugin_dir)
    assert loaded(d) == {}
    assert str(path) not in d.status()["plugins"].get("fallback", {})
    assert "nothing of it serves" in d.cli("status").stdout


# -- a plugin's table is checked against its schema --------------------------------------

TYPO = {"agent_rate": "fast", "bogus": 1}


def test_every_bundled_plugin_declares_a_config_schema_that_takes_an_empty_table():
    for path in sorted(BUNDLED.glob("*.py")):
        cls = load_class(read_source(path))
        assert cls.config_schema is not None, path.name
        plugin_config(cls, {"mode": "permissive", "budget_ms": 20})  # the gateway's keys


def test_a_table_with_a_typo_is_refused_naming_the_key():
    cls = load_class(read_source(BUNDLED / "rate_limit.py"))
    with pytest.raises(TableRefused, match=r"key plugins\.config\.rate_limit\.bogus: unknown"):
        plugin_config(cls, TYPO)
    with pytest.raises(TableRefused, match=r"rate_limit\.agent_rate: Expected `float`, got"):
        plugin_config(cls, {"agent_rate": "fast"})
    assert plugin_config(cls, {"agent_rate": 2, "agent_burst": 3}).agent_rate == 2.0


def test_a_table_that_does_not_fit_stops_the_start_with_one_line(start_daemon, plugin_dir):
    shutil.copy(BUNDLED / "rate_limit.py", plugin_dir / "rate_limit.py")
    d = serve(start_daemon, plugin_dir, wait=False, rate_limit=TYPO)
    assert d.wait_exit(60) == 1
    log = d.log()
    assert f"{d.config}: key plugins.config.rate_limit.bogus: unknown key" in log, log
    assert sum("plugins.config.rate_limit" in line for line in log.splitlines()) == 1, log
    assert "ready:" not in log


def test_a_table_typo_at_reload_is_refused_and_calls_keep_their_old_table(
        start_daemon, plugin_dir):
    shutil.copy(BUNDLED / "rate_limit.py", plugin_dir / "rate_limit.py")
    d = serve(start_daemon, plugin_dir, rate_limit={"agent_rate": 100, "agent_burst": 100})
    wait_for(lambda: "rate_limit" in loaded(d), 20, "rate_limit to load")
    good = d.config.read_text()
    d.config.write_text(good.replace('"agent_rate" = 100', '"agent_rate" = "fast", "bogus" = 1'))
    assert '"agent_rate" = "fast"' in d.config.read_text()
    out = d.cli("reload")
    assert out.returncode == 1, out.stdout
    assert "reload refused" in out.stderr and "plugins.config.rate_limit.bogus" in out.stderr
    with agent(d, "bob") as bob:
        for _ in range(3):
            assert bob.call_tool("echo", {})["isError"] is False, "the old table serves"
    assert d.status()["daemon"]["last_reload"].startswith("refused:")


def test_a_dropped_file_refused_for_its_table_loads_once_reload_fixes_the_table(
        start_daemon, plugin_dir):
    d = serve(start_daemon, plugin_dir, rate_limit=TYPO)  # no rate_limit file yet
    path = drop(plugin_dir, "rate_limit", (BUNDLED / "rate_limit.py").read_text())
    why = wait_for(lambda: d.status()["plugins"]["refused"].get(str(path)), 20, "refusal")
    assert "key plugins.config.rate_limit.bogus: unknown key" in why
    d.config.write_text(d.config.read_text().replace('"bogus" = 1', '"agent_burst" = 5')
                        .replace('"fast"', "100"))
    out = d.cli("reload")
    assert out.returncode == 0 and "plugin rate_limit v1" in out.stdout, out
    assert loaded(d) == {"rate_limit": 1} and d.status()["plugins"]["refused"] == {}


def test_plugins_check_refuses_a_table_that_does_not_fit(state_dir):
    config = write_config(state_dir / "check.toml", {
        "daemon": {"state_dir": str(state_dir)}, "plugins.config.rate_limit": TYPO})
    out = subprocess.run([*CLI, "plugins", "check", str(BUNDLED / "rate_limit.py"),
                          "--config", str(config)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 1
    assert "refused: key plugins.config.rate_limit.bogus: unknown key" in out.stderr


# -- plugins check against the live state ------------------------------------------------

def test_plugins_check_with_a_running_daemon_migrates_a_copy_of_the_live_state(
        start_daemon, plugin_dir, tmp_path):
    d = serve(start_daemon, plugin_dir)
    drop(plugin_dir, "counter", COUNTER_V1)
    wait_for(lambda: loaded(d).get("counter") == 1, 20, "counter v1 to load")
    with agent(d, "bob") as bob:
        bob.call_tool("echo", {})
    v2 = tmp_path / "counter_v2.py"
    v2.write_text(BROKEN["migrate raising"])

    out = d.cli("plugins", "check", str(v2))
    assert out.returncode == 1, out.stdout
    assert "refused by the running daemon" in out.stderr
    assert "migrate raised ValueError: cannot migrate" in out.stderr

    v2.write_text(COUNTER_V2)
    out = d.cli("plugins", "check", str(v2))
    assert out.returncode == 0, out.stderr
    assert "ok: plugin counter v2" in out.stdout
    assert "migrate from the live v1 state passed" in out.stdout
    assert loaded(d) == {"counter": 1}, "a check swaps nothing"


def test_plugins_check_offline_says_migrate_was_not_tried_against_live_state(state_dir,
                                                                           tmp_path):
    config = write_config(state_dir / "check.toml", {"daemon": {"state_dir": str(state_dir)}})
    v2 = tmp_path / "counter_v2.py"
    v2.write_text(BROKEN["migrate raising"])
    out = subprocess.run([*CLI, "plugins", "check", str(v2), "--config", str(config)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "ok: plugin counter v2" in out.stdout
    assert "migrate was not tried against live state" in out.stdout
