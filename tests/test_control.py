"""The CLI and the control endpoint: status, restart, reload, stop, and who may use them."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import threading
import time

import pytest
import zmq

from tests.conftest import CLI, alive, wait_for, write_config


def test_serve_with_built_in_defaults_and_status_shows_the_live_tree(start_daemon):
    daemon = start_daemon()
    snap = daemon.wait_ready()
    tree = snap["tree"]
    assert tree["name"] == "workingagents" and tree["state"] == "ready"
    assert [c["name"] for c in tree["children"]] == ["audit", "gateway", "tools"]
    assert [w["name"] for w in tree["children"][1]["children"]] == ["gateway-0", "gateway-1"]
    assert tree["children"][2]["children"] == [], "no upstreams configured"
    for w in daemon.workers().values():
        assert w["state"] == "ready" and alive(w["pid"])
        assert w["rss"] > 1_000_000 and w["cpu_percent"] is not None
    text = daemon.cli("status").stdout
    for needle in ("gateway-0", "gateway-1", "tools", "one_for_one", "CPU%", "RSS",
                   str(daemon.pid)):
        assert needle in text


def test_no_config_at_all_uses_the_built_in_defaults(state_dir):
    for port in (7700, 7701, 7780):  # the defaults; this test cannot pick others
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                pytest.skip(f"port {port} is in use on this machine")
    env = {k: v for k, v in os.environ.items() if k != "WORKINGAGENTS_CONFIG"}
    env.update(STATE_DIRECTORY=str(state_dir), RUNTIME_DIRECTORY=str(state_dir / "run"))
    proc = subprocess.Popen([*CLI, "serve"], env=env, stderr=subprocess.PIPE, text=True)
    try:
        def status() -> subprocess.CompletedProcess[str] | None:
            out = subprocess.run([*CLI, "status"], env=env, capture_output=True, text=True)
            return out if out.returncode == 0 and "gateway-1" in out.stdout else None
        out = wait_for(status, 20, "status from a daemon started without a config")
        assert "built-in defaults" in out.stdout
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0


def test_status_of_a_daemon_that_is_not_running_is_one_line_and_exit_1(state_dir):
    path = write_config(state_dir / "wa.toml", {"daemon": {"state_dir": str(state_dir)}})
    out = subprocess.run([*CLI, "status", "--config", str(path)], capture_output=True,
                         text=True, timeout=30)
    assert out.returncode == 1
    expected = f"Error: workingagents is not running (no {state_dir}/control.json)"
    assert out.stderr.strip() == expected
    # a stale file from a master killed with -9
    (state_dir / "control.json").write_text(json.dumps(
        {"pid": 999_999_999, "endpoint": "ipc:///nonexistent", "token": "x"}))
    out = subprocess.run([*CLI, "status", "--config", str(path)], capture_output=True,
                         text=True, timeout=30)
    assert out.returncode == 1 and "is gone" in out.stderr and out.stderr.count("\n") == 1


def test_usage_errors_exit_2(state_dir):
    out = subprocess.run([*CLI, "restart"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 2
    out = subprocess.run([*CLI, "frobnicate"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 2


def test_only_the_owner_gets_in_files_are_0600_and_a_wrong_token_is_refused(start_daemon):
    daemon = start_daemon()
    daemon.wait_ready()
    info = json.loads((daemon.state_dir / "control.json").read_text())
    sock_path = info["endpoint"].removeprefix("ipc://")
    for path in (daemon.state_dir / "control.json", sock_path):
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600, path
    assert stat.S_IMODE(os.stat(daemon.state_dir / "run").st_mode) == 0o700
    ctx = zmq.Context.instance()
    s = ctx.socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    s.connect(info["endpoint"])
    try:
        for token in ("wrong", None):
            s.send(json.dumps({"id": 1, "token": token, "cmd": "stop"}).encode())
            assert s.poll(5000)
            reply = json.loads(s.recv())
            assert reply == {"id": 1, "ok": False,
                             "error": "unauthorized: bad or missing control token"}
        s.send(b"\xff garbage")
        assert s.poll(5000) and json.loads(s.recv())["ok"] is False
        s.send(json.dumps({"id": 2, "token": info["token"], "cmd": "nope"}).encode())
        assert s.poll(5000) and "unknown command 'nope'" in json.loads(s.recv())["error"]
    finally:
        s.close()
    assert daemon.proc.poll() is None, "the daemon shrugged all of that off"
    assert daemon.status()["daemon"]["healthy"]


def test_restart_name_proves_the_replacement_before_draining_the_old(start_daemon):
    daemon = start_daemon()
    daemon.wait_ready()
    old = daemon.pids()
    out = daemon.cli("restart", "gateway-1")
    assert out.returncode == 0, out.stderr
    new = daemon.pids()
    assert new["gateway-1"] != old["gateway-1"]
    assert new["gateway-0"] == old["gateway-0"]
    assert out.stdout.strip() == f"restarted worker gateway-1: pid {new['gateway-1']}"
    log = daemon.log()
    started = log.index(f"replaced pid {old['gateway-1']} with a new incarnation")
    stopped = log.index("gateway-1 stopped", started)
    assert started < stopped, "new READY before old stopped"
    out = daemon.cli("restart", "gateway")
    assert out.returncode == 0 and out.stdout.startswith("restarted supervisor gateway")
    assert not set(daemon.pids().values()) & {new["gateway-0"], new["gateway-1"]}
    out = daemon.cli("restart", "nosuch")
    assert out.returncode == 1 and "no child named 'nosuch'" in out.stderr


@pytest.mark.serial  # a bound on elapsed time
def test_commands_on_different_subtrees_run_at_once_and_status_never_waits(start_daemon):
    daemon = start_daemon(supervision={"shutdown_timeout": 3.0}, tree={"id": "root", "children": [
        {"id": "left", "children": [{"id": "slow", "shutdown": 3.0,
                                     "options": {"ignore_term": True}}]},
        {"id": "right", "children": [{"id": "quick"}]}]})
    daemon.wait_ready()
    results: dict[str, subprocess.CompletedProcess[str]] = {}
    slow = threading.Thread(target=lambda: results.update(slow=daemon.cli("restart", "slow")))
    slow.start()
    time.sleep(0.3)  # the slow restart is now waiting out its 3s shutdown timeout
    t0 = time.monotonic()
    results["quick"] = daemon.cli("restart", "quick")
    status = daemon.cli("status")
    elapsed = time.monotonic() - t0
    slow.join(30)
    assert results["quick"].returncode == 0 and status.returncode == 0
    assert results["slow"].returncode == 0, results["slow"].stderr
    assert elapsed < 2.5, f"quick restart + status waited on the other subtree ({elapsed:.1f}s)"
    log = daemon.log()
    assert log.index("root/right/quick replaced") < log.index("root/left/slow stopped")


def test_reload_applies_changes_and_a_bad_config_is_refused_with_the_old_kept(start_daemon):
    daemon = start_daemon()
    daemon.wait_ready()
    text = daemon.config.read_text()
    daemon.config.write_text(text.replace("[daemon]", "[daemon]\ngateway_workers = 3"))
    out = daemon.cli("reload")
    assert out.returncode == 0 and "gateway workers 2 -> 3" in out.stdout
    assert "gateway-2" in daemon.pids()
    daemon.config.write_text(text.replace("[daemon]", "[daemon]\ngateway_workers = \"x\""))
    out = daemon.cli("reload")
    assert out.returncode == 1
    assert out.stderr.startswith("Error: reload refused: ")
    assert "key daemon.gateway_workers" in out.stderr
    assert "reload refused, running config kept" in daemon.log()
    assert len(daemon.pids()) == 4  # audit + 3 gateway workers
    daemon.config.write_text(text.replace("[daemon]", "[daemon]\nruntime_dir = \"/tmp/elsewhere\""))
    out = daemon.cli("reload")
    assert out.returncode == 1 and "cannot change while running" in out.stderr
    daemon.config.write_text(text)  # back to 2 workers, via SIGHUP this time
    daemon.proc.send_signal(signal.SIGHUP)
    # the reload logs "done" once it has finished, a moment after gateway-2 is gone
    wait_for(lambda: "gateway-2" not in daemon.pids()
             and "reload done: gateway workers 3 -> 2" in daemon.log(), 10,
             "gateway-2 to be removed and the reload done")


def test_a_second_master_on_the_same_state_dir_is_refused(start_daemon, state_dir):
    daemon = start_daemon()
    daemon.wait_ready()
    out = subprocess.run([*CLI, "serve", "--config", str(daemon.config)], capture_output=True,
                         text=True, timeout=30)
    assert out.returncode == 1
    assert f"another master is running with state dir {state_dir}" in out.stderr
    assert daemon.status()["daemon"]["healthy"]


def test_ctrl_c_twice_stops_at_once(start_daemon):
    daemon = start_daemon(tree={"id": "root", "children": [
        {"id": "stubborn", "shutdown": 30, "options": {"ignore_term": True}}]})
    daemon.wait_ready()
    daemon.proc.send_signal(signal.SIGINT)
    time.sleep(0.3)
    daemon.proc.send_signal(signal.SIGINT)
    assert daemon.wait_exit(10) == 0
    assert "second interrupt: killing every worker now" in daemon.log()


def test_stop_via_cli_exits_0(start_daemon):
    daemon = start_daemon()
    daemon.wait_ready()
    out = daemon.cli("stop")
    assert out.returncode == 0
    assert daemon.wait_exit(10) == 0
    assert sys.executable  # the daemon is gone; the fixture finds nothing left to stop


def test_bus_and_control_work_over_tcp_on_ephemeral_loopback_ports(start_daemon):
    daemon = start_daemon(supervision={"bus_endpoint": "tcp://127.0.0.1:*"},
                          control={"endpoint": "tcp://127.0.0.1:*"},
                          tree={"id": "root", "children": [{"id": "a"}, {"id": "b"}]})
    daemon.wait_ready()
    info = json.loads((daemon.state_dir / "control.json").read_text())
    assert info["endpoint"].startswith("tcp://127.0.0.1:") and not info["endpoint"].endswith("*")
    pids = daemon.pids()
    os.kill(pids["a"], signal.SIGKILL)
    wait_for(lambda: daemon.pids().get("a") not in (None, pids["a"]), 10, "a restart over tcp")
    assert daemon.pids()["b"] == pids["b"]
