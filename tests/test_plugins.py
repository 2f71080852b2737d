"""Guardrail and policy plugins: dropped in, validated, swapped everywhere at once."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from daemon.protocol.jsonrpc import RpcError
from tests.conftest import CLI, wait_for
from tests.gateway_helpers import agent, gateway_config, shard
from tests.plugin_versions import BROKEN, COUNTER_V1, COUNTER_V2, COUNTER_V3, FLAKY, STRICT


def drop(directory: Path, name: str, text: str, mode: int = 0o644) -> Path:
    """The documented way: write .NAME.py.tmp, then rename it to NAME.py."""
    tmp = directory / f".{name}.py.tmp"
    tmp.write_text(text)
    os.chmod(tmp, mode)
    final = directory / f"{name}.py"
    os.replace(tmp, final)
    return final


def loaded(daemon) -> dict[str, object]:
    return {p["name"]: p["version"] for p in daemon.status()["plugins"]["loaded"]}


def refused(daemon) -> dict[str, str]:
    return daemon.status()["plugins"]["refused"]


@pytest.fixture
def plugin_dir(state_dir: Path) -> Path:
    d = state_dir / "plugins"
    d.mkdir(mode=0o755)
    return d


@pytest.fixture
def daemon(start_daemon, plugin_dir):
    def start(**plugins):
        config = gateway_config()
        config["plugins"] = {"dirs": [str(plugin_dir)], "snapshot_interval": 0.2, **plugins}
        d = start_daemon(extra=config)
        d.wait_ready()
        return d
    return start


def echo_text(client, **arguments) -> str:
    result = client.call_tool("echo", arguments)
    assert result["isError"] is False, result
    return str(result["content"][0]["text"])


def test_a_dropped_plugin_goes_live_and_its_denials_are_spec_shaped(daemon, plugin_dir):
    d = daemon()
    drop(plugin_dir, "counter", COUNTER_V1)
    wait_for(lambda: loaded(d).get("counter") == 1, 20, "counter v1 to load")
    with agent(d, "bob") as bob:
        assert echo_text(bob, a=1).endswith("[v1 #1]")
        denied = bob.call_tool("echo", {"blocked": True})
        assert denied["isError"] is True
        assert denied["content"][0]["text"] == "Denied by counter: blocked by v1"
        assert denied["_meta"]["io.workingagents/denied"] == {
            "by": "counter", "version": 1, "reason": "blocked by v1", "kind": "policy"}
    status = d.cli("status").stdout
    assert "plugins: counter v1" in status
    assert "counter" in d.cli("plugins", "list").stdout


def test_hot_swap_under_load_from_both_transports_loses_no_call(daemon, plugin_dir):
    d = daemon()
    drop(plugin_dir, "counter", COUNTER_V1)
    wait_for(lambda: loaded(d).get("counter") == 1, 20, "counter v1")
    stop = threading.Event()
    seen: dict[str, list[str]] = {}
    errors: list[BaseException] = []

    def load(name: str, transport: str) -> None:
        texts = seen.setdefault(f"{name}-{transport}", [])
        try:
            with agent(d, name, transport) as client:
                while not stop.is_set():
                    texts.append(echo_text(client, t=transport))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=load, args=(n, t))
               for n in ("alice", "bob") for t in ("tcp", "zmq")]
    for t in threads:
        t.start()
    try:
        time.sleep(0.5)
        drop(plugin_dir, "counter", COUNTER_V2)
        wait_for(lambda: all(texts and "[v2 #" in texts[-1] for texts in seen.values()), 30,
                 "every agent to see v2")
        drop(plugin_dir, "counter", COUNTER_V3)
        wait_for(lambda: all("[v3 #" in texts[-1] for texts in seen.values()), 30,
                 "every agent to see v3")
        time.sleep(0.3)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    assert errors == [], errors
    for key, texts in seen.items():
        versions = [t.rsplit("[", 1)[1].split()[0] for t in texts]
        assert versions == sorted(versions), f"{key}: never back to an old version"
        assert {"v1", "v2", "v3"} <= set(versions) or key, key
    # the count lives on across versions: state migrated, never reset
    for name in ("alice", "bob"):
        numbers = sorted(int(t.rsplit("#", 1)[1].rstrip("]"))
                         for k, texts in seen.items() if k.startswith(name) for t in texts)
        assert numbers == list(range(1, len(numbers) + 1)), f"{name}: every call counted once"
    assert '"seen_by":"v2"' in seen["bob-tcp"][-1], "v2+ rewrites the arguments"


@pytest.mark.parametrize("kind", sorted(BROKEN))
def test_a_broken_version_is_refused_and_the_old_one_keeps_serving(daemon, plugin_dir, kind):
    d = daemon()
    drop(plugin_dir, "counter", COUNTER_V1)
    wait_for(lambda: loaded(d).get("counter") == 1, 20, "counter v1")
    path = drop(plugin_dir, "counter", BROKEN[kind])
    why = wait_for(lambda: refused(d).get(str(path)), 40, f"the {kind} to be refused")
    expected = {"syntax error": "syntax error at line", "import-time crash": "check process died",
                "import-time infinite loop": "did not finish within",
                "migrate raising": "migrate raised ValueError: cannot migrate",
                "same version": "is the version already serving",
                "no plugin class": "exactly one is needed"}[kind]
    assert expected in why, why
    assert loaded(d) == {"counter": 1}
    with agent(d, "bob") as bob:
        assert "[v1 #" in echo_text(bob)
    assert "refused, the version serving stays" in d.log()
    status = d.cli("status")
    assert f"plugin REFUSED {path}" in status.stdout
    assert status.returncode == 3 and "DEGRADED" in status.stdout, "a refused file degrades"
    assert f"plugin file refused: {path}" in status.stdout


def test_a_file_writable_by_others_is_refused(daemon, plugin_dir):
    d = daemon()
    path = drop(plugin_dir, "counter", COUNTER_V1, mode=0o666)
    why = wait_for(lambda: refused(d).get(str(path)), 20, "refusal")
    assert "writable by group or others" in why and loaded(d) == {}


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")
def test_a_file_owned_by_another_user_is_refused(daemon, plugin_dir):
    d = daemon()
    path = plugin_dir / "counter.py"
    tmp = plugin_dir / ".counter.py.tmp"
    tmp.write_text(COUNTER_V1)
    os.chown(tmp, 65534, 65534)
    os.replace(tmp, path)
    why = wait_for(lambda: refused(d).get(str(path)), 20, "refusal")
    assert "owned by uid 65534, not by root or the daemon's user" in why
    assert loaded(d) == {}


def test_deleting_the_file_unloads_the_plugin(daemon, plugin_dir):
    d = daemon()
    path = drop(plugin_dir, "strict", STRICT)
    wait_for(lambda: "strict" in loaded(d), 20, "strict to load")
    with agent(d, "bob") as bob:
        assert bob.call_tool("echo", {})["isError"] is True
        path.unlink()
        wait_for(lambda: "strict" not in loaded(d), 20, "strict to unload")
        assert bob.call_tool("echo", {})["isError"] is False


def test_a_raising_or_slow_hook_denies_that_call_and_names_the_plugin(daemon, plugin_dir):
    d = daemon()
    drop(plugin_dir, "flaky", FLAKY)
    wait_for(lambda: "flaky" in loaded(d), 20, "flaky to load")
    with agent(d, "bob") as bob:
        boom = bob.call_tool("echo", {"boom": True})
        assert boom["isError"] and "plugin flaky failed (RuntimeError)" in \
            boom["content"][0]["text"]
        assert boom["_meta"]["io.workingagents/denied"]["kind"] == "guardrail"
        slow = bob.call_tool("echo", {"slow": True})
        assert slow["isError"] and "overran its 50 ms budget" in slow["content"][0]["text"]
        assert bob.call_tool("echo", {"fine": 1})["isError"] is False
    assert d.status()["daemon"]["healthy"]


def test_a_permissive_plugin_logs_its_denials_without_enforcing_them(daemon, plugin_dir):
    d = daemon(config={"strict": {"mode": "permissive"}})
    drop(plugin_dir, "strict", STRICT)
    wait_for(lambda: "strict" in loaded(d), 20, "strict to load")
    with agent(d, "bob") as bob:
        assert bob.call_tool("echo", {"x": 1})["isError"] is False
    wait_for(lambda: "would deny bob calling echo (permissive, not enforced)" in d.log(), 5,
             "the logged denial")


def test_plugin_state_survives_a_worker_restart(daemon, plugin_dir):
    d = daemon()
    drop(plugin_dir, "counter", COUNTER_V1)
    wait_for(lambda: loaded(d).get("counter") == 1, 20, "counter v1")
    with agent(d, "bob") as bob:
        for _ in range(5):
            echo_text(bob)
    time.sleep(0.6)  # > snapshot_interval: the master has bob's counts
    victim = d.pids()[shard("bob")]
    os.kill(victim, signal.SIGKILL)
    wait_for(lambda: d.pids().get(shard("bob")) not in (None, victim), 10, "restart")
    with agent(d, "bob") as bob:
        assert echo_text(bob).endswith("[v1 #6]"), "resumed from the snapshot"


def test_reload_rescans_the_plugin_dirs_when_watching_is_off(daemon, plugin_dir):
    d = daemon(watch=False)
    drop(plugin_dir, "counter", COUNTER_V1)
    time.sleep(1.0)
    assert loaded(d) == {}
    d.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: loaded(d).get("counter") == 1, 20, "the reload to load it")
    assert "plugin counter v1" in d.log()


def test_plugins_check_validates_a_file_offline(tmp_path):
    good, bad = tmp_path / "good.py", tmp_path / "bad.py"
    good.write_text(COUNTER_V2)
    bad.write_text(BROKEN["syntax error"])
    out = subprocess.run([*CLI, "plugins", "check", str(good)], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0 and "ok: plugin counter v2, priority 10, hooks before_call, " \
        "after_call" in out.stdout
    out = subprocess.run([*CLI, "plugins", "check", str(bad)], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 1 and "refused: syntax error at line" in out.stderr


def test_a_hidden_tool_is_still_unknown_with_plugins_loaded(daemon, plugin_dir):
    d = daemon()
    drop(plugin_dir, "counter", COUNTER_V1)
    wait_for(lambda: loaded(d).get("counter") == 1, 20, "counter v1")
    with agent(d, "alice") as alice, pytest.raises(RpcError) as err:
        alice.call_tool("sleep", {"seconds": 0})
    assert err.value.code == -32602


def test_the_readme_example_plugin_passes_the_checks(tmp_path):
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    example = readme.split("# /etc/workingagents/plugins.d/quota.py\n", 1)[1].split("```")[0]
    path = tmp_path / "quota.py"
    path.write_text(example)
    out = subprocess.run([*CLI, "plugins", "check", str(path)], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "plugin quota v2, priority 15, hooks before_call, after_call" in out.stdout


WARMED = '''
from __future__ import annotations
import colorsys
from email import message
try:
    import no_such_module_anywhere
except ImportError:
    pass
from daemon.plugin import Plugin

def later():
    import wave  # only if called: not preloaded

class Warmed(Plugin):
    name = "warmed"
    version = {version}
'''


def test_the_forkserver_warm_up_preloads_imports_and_serves_only_the_exact_bytes(tmp_path):
    import ast
    import sys

    from daemon.hotswap import source, warm

    path = drop(tmp_path, "warmed", WARMED.format(version=1))
    assert warm.imported_modules(ast.parse(path.read_bytes())) == [
        "colorsys", "email", "no_such_module_anywhere"]
    warm.warm([tmp_path])  # a module that is not installed is skipped, not an error
    v1 = source.read_source(path)
    assert (v1.sha256, v1.path) in source.COMPILED and "colorsys" in sys.modules
    assert source.load_class(v1).version == 1
    # the file changed after the warm-up: the current bytes are compiled, never the cache
    v2 = source.read_source(drop(tmp_path, "warmed", WARMED.format(version=2)))
    assert (v2.sha256, v2.path) not in source.COMPILED
    assert source.load_class(v2).version == 2
    source.COMPILED.pop((v1.sha256, v1.path))


def test_the_warm_up_runs_only_the_modules_of_plugin_files_the_daemon_ships(tmp_path):
    import sys

    from daemon.config import bundled_plugin_dirs
    from daemon.hotswap import source, warm

    shipped = (bundled_plugin_dirs()[0] / "secrets.py").read_text()
    ours = drop(tmp_path, "secrets", shipped)  # a copy, byte for byte
    marker = tmp_path / "ran"
    # the same plugin, edited: its module (here, one that says it ran) is never run here
    edited = drop(tmp_path, "edited", shipped.replace(
        'name = "secrets"', 'name = "edited"') + f"\nopen({str(marker)!r}, 'w').close()\n")
    warm.warm([tmp_path])
    v1, other = source.read_source(ours), source.read_source(edited)
    try:
        assert (v1.sha256, v1.path) in source.LOADED
        assert (other.sha256, other.path) not in source.LOADED and not marker.exists()
        preloaded = source.LOADED[(v1.sha256, v1.path)]
        first = source.load_class(v1)  # the worker's first load takes the module as it is
        assert sys.modules[first.__module__] is preloaded and first.name == "secrets"
        assert (v1.sha256, v1.path) not in source.LOADED
        again = source.load_class(v1)  # later loads of the same bytes run a fresh module
        assert again is not first and sys.modules[again.__module__] is not preloaded
        assert source.load_class(other).name == "edited" and marker.exists()
    finally:
        for key in ((v1.sha256, v1.path), (other.sha256, other.path)):
            source.COMPILED.pop(key, None)
            source.LOADED.pop(key, None)


PATIENT = '''
import asyncio
from daemon.plugin import Plugin

class Patient(Plugin):
    name = "patient"

    async def before_call(self, call):
        async with asyncio.timeout(5):  # a timeout needs the call to run in a task
            await asyncio.sleep(0.01)
        return None

    async def after_call(self, call, result):
        await asyncio.sleep(0)
        return {**result, "content": [{"type": "text", "text": "waited"}]}
'''


def test_hooks_that_await_under_asyncio_timeout_serve_inline_tools(daemon, plugin_dir):
    d = daemon()
    drop(plugin_dir, "patient", PATIENT)
    wait_for(lambda: "patient" in loaded(d), 20, "patient to load")
    with agent(d, "bob") as bob:
        assert [echo_text(bob, n=n) for n in range(3)] == ["waited"] * 3
