"""Operations that should be boring: group signals, busy addresses, upstream stderr and
exits, restart by path, status when the daemon is gone, and a clean runtime dir."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from tests.conftest import CLI, wait_for

LEGACY = Path(__file__).parent / "fixtures" / "legacy_upstream.py"


def own_session(argv: list[str]) -> list[str]:
    """Run the master as the leader of its own session and process group, as a terminal
    or `timeout` would; setsid execs in place, so the pid stays the master's."""
    return ["setsid", *argv]


def session_members(sid: int) -> list[int]:
    found = []
    for p in psutil.process_iter(["pid"]):
        try:
            if os.getsid(p.pid) == sid and p.status() != psutil.STATUS_ZOMBIE:
                found.append(p.pid)
        except (OSError, psutil.Error):
            pass
    return found


def upstream(name: str, prelude: str = "") -> dict[str, dict[str, object]]:
    """A handshake-era upstream whose Python ``prelude`` runs first (say, to write stderr)."""
    code = f"{prelude}\nimport runpy; runpy.run_path({str(LEGACY)!r}, run_name='__main__')"
    return {f"upstreams.{name}": {"command": [sys.executable, "-c", code]}}


# -- signals to the daemon's whole process group -----------------------------------------

def test_a_hangup_to_the_process_group_reloads_once_and_restarts_no_worker(start_daemon):
    d = start_daemon(wrap=own_session)
    d.wait_ready()
    assert os.getpgid(d.pid) == d.pid
    before = d.pids()
    os.killpg(d.pid, signal.SIGHUP)
    wait_for(lambda: "reload done" in d.log(), 10, "the reload")
    time.sleep(1.0)  # long enough for a dead forkserver to show as crashed workers
    log = d.log()
    assert log.count("reload done") == 1, log
    assert "crashed" not in log and "exit code 255" not in log, log
    assert d.pids() == before


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_signal_to_the_process_group_stops_the_tree_cleanly(start_daemon, sig):
    d = start_daemon(wrap=own_session)
    d.wait_ready()
    os.killpg(d.pid, sig)
    assert d.wait_exit(20) == 0, d.log()
    log = d.log()
    assert "crashed" not in log and "exit code 255" not in log, log
    wait_for(lambda: not session_members(d.pid), 10, "every process of the daemon to exit")


# -- a listen address already in use ------------------------------------------------------

@pytest.mark.parametrize("key", ["listen.tcp", "listen.zmq", "metrics.listen"])
def test_a_busy_listen_address_is_one_line_naming_the_key_and_address(start_daemon, key):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        address = f"127.0.0.1:{busy.getsockname()[1]}"
        listen = {"tcp": "127.0.0.1:0", "zmq": "tcp://127.0.0.1:*"}
        section, _, option = key.partition(".")
        value = f"tcp://{address}" if key == "listen.zmq" else address
        extra = {section: {**(listen if section == "listen" else {}), option: value}}
        d = start_daemon(extra=extra, wrap=own_session)
        assert d.wait_exit(20) == 1
    lines = [line for line in d.log().splitlines() if " ERROR " in line or "Traceback" in line]
    assert len(lines) == 1, d.log()
    assert key in lines[0] and address in lines[0] and "in use" in lines[0], lines[0]
    assert "Traceback" not in d.log()
    wait_for(lambda: not session_members(d.pid), 10, "nothing left running")


# -- upstream servers: their stderr and their exits ----------------------------------------

NOISY = ("import sys; sys.stderr.write('\\x1b[31mred alert\\x1b[0m\\n  second line\\n'"
         " + 'x' * 100000 + '\\n'); sys.stderr.flush()")


def test_upstream_stderr_is_logged_one_json_event_per_line_named_after_the_upstream(
        start_daemon):
    d = start_daemon(daemon={"log_format": "json"}, extra=upstream("noisy", NOISY))
    d.wait_ready(timeout=60)
    wait_for(lambda: "second line" in d.log(), 10, "the upstream's stderr in the log")
    events = [json.loads(line) for line in d.log().splitlines() if line.strip()]  # all JSON
    said = [e for e in events if e["logger"] == "upstream.noisy"]
    assert [e["message"] for e in said[:2]] == ["noisy stderr: red alert",
                                                "noisy stderr:   second line"]
    assert "\x1b" not in d.log()
    assert len(said[2]["message"]) < 20_000, "a long line is cut"


def test_an_upstream_killed_by_sigkill_is_logged_once_as_such_without_a_traceback(
        start_daemon):
    d = start_daemon(extra=upstream("old"))
    d.wait_ready(timeout=60)
    worker = d.workers()["mcp:old"]
    server = psutil.Process(worker["pid"]).children()[0]
    server.kill()
    wait_for(lambda: d.workers()["mcp:old"]["state"] == "ready"
             and d.workers()["mcp:old"]["pid"] != worker["pid"], 30, "the upstream's restart")
    log = d.log()
    assert log.count("killed by SIGKILL") == 1, log
    assert "Traceback" not in log and "exit code 1 " not in log and "(exit code 1)" not in log
    crash = next(line for line in log.splitlines() if "mcp:old crashed" in line)
    assert "server exited" in crash, crash


# -- restart by the path the log prints ---------------------------------------------------

def test_restart_accepts_the_path_every_log_line_prints(start_daemon):
    d = start_daemon()
    d.wait_ready()
    for name in ("workingagents/gateway/gateway-1", "gateway/gateway-1", "gateway-1"):
        before = d.pids()["gateway-1"]
        out = d.cli("restart", name)
        assert out.returncode == 0, out.stderr
        assert d.pids()["gateway-1"] != before
    out = d.cli("restart", "workingagents/tools/gateway-1")
    assert out.returncode == 1
    assert out.stderr.count("\n") == 1 and "workingagents/tools/gateway-1" in out.stderr


# -- the CLI when the daemon is gone or elsewhere -----------------------------------------

def test_status_watch_says_the_daemon_stopped_and_exits_0(start_daemon):
    d = start_daemon()
    d.wait_ready()
    watch = subprocess.Popen([*CLI, "status", "--watch", "--interval", "0.2", "--config",
                              str(d.config)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    try:
        time.sleep(1.0)
        d.proc.send_signal(signal.SIGTERM)
        out, err = watch.communicate(timeout=20)
    finally:
        if watch.poll() is None:
            watch.kill()
            watch.wait()
    assert watch.returncode == 0, err
    assert "stopped" in out.splitlines()[-1], out[-500:]


def test_status_when_not_running_names_the_control_file_and_how_to_pick_another(
        state_dir: Path):
    env = {k: v for k, v in os.environ.items() if k != "WORKINGAGENTS_CONFIG"}
    env["HOME"] = str(state_dir)
    env["XDG_STATE_HOME"] = str(state_dir / "state")
    out = subprocess.run([*CLI, "status"], capture_output=True, text=True, env=env,
                         timeout=60)
    assert out.returncode == 1
    line = out.stderr.strip()
    assert line.count("\n") == 0, line
    assert "control.json" in line and "--config" in line and "WORKINGAGENTS_CONFIG" in line


# -- a stopped daemon leaves its runtime dir clean ----------------------------------------

def test_a_stopped_daemon_leaves_no_sockets_or_metrics_files_behind(start_daemon):
    d = start_daemon(extra=upstream("old"))
    d.wait_ready(timeout=60)
    run = d.state_dir / "run"
    assert any(stat.S_ISSOCK(p.stat().st_mode) for p in run.iterdir())
    d.proc.send_signal(signal.SIGTERM)
    assert d.wait_exit(20) == 0
    left = [str(p.relative_to(run)) for p in run.rglob("*")]
    assert left == [], left

