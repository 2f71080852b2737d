"""Heartbeats: a worker that stops answering is dumped, killed and replaced."""

from __future__ import annotations

import os
import signal
import time

from tests.conftest import alive, wait_for
from tests.gateway_helpers import gateway_config


def test_a_sigstopped_worker_is_aborted_with_a_stack_dump_and_replaced(start_daemon):
    daemon = start_daemon(tree={"id": "root", "children": [{"id": "w"}, {"id": "other"}]})
    daemon.wait_ready()
    pids = daemon.pids()
    os.kill(pids["w"], signal.SIGSTOP)
    wait_for(lambda: daemon.pids().get("w") not in (None, pids["w"]), 15, "a replacement")
    log = daemon.log()
    assert f"root/w pid {pids['w']} sent no heartbeat" in log
    assert "hung; SIGABRT" in log
    assert "Fatal Python error: Aborted" in log, "faulthandler put the stack in the log"
    assert "root/w hung (no heartbeat for 1s, killed by SIGABRT)" in log
    assert daemon.pids()["other"] == pids["other"]
    assert not alive(pids["w"])


def test_a_worker_busy_looping_in_python_is_replaced(start_daemon, state_dir):
    # The heartbeat stops when the worker's event loop stops turning, whatever blocks it.
    daemon = start_daemon(tree={"id": "root", "children": [
        {"id": "busy", "target": "busy_worker:run",
         "options": {"trigger": str(state_dir / "go-busy")}}]})
    daemon.wait_ready()
    first = daemon.pids()["busy"]
    (state_dir / "go-busy").touch()
    wait_for(lambda: daemon.pids().get("busy") not in (None, first), 15, "a replacement")
    log = daemon.log()
    assert "File " in log and "busy_worker.py" in log, "the stack names the busy loop"


def test_a_master_stalled_past_the_heartbeat_timeout_does_not_kill_its_healthy_workers(
        start_daemon):
    d = start_daemon(extra=gateway_config())
    d.wait_ready()
    before = {name: w["pid"] for name, w in d.workers().items()}
    # the master's loop stalls past heartbeat_timeout (1 s), short of the workers' own
    # patience (2 x heartbeat_timeout): their heartbeats wait unread meanwhile
    os.kill(d.pid, signal.SIGSTOP)
    time.sleep(1.5)
    os.kill(d.pid, signal.SIGCONT)
    time.sleep(3)  # a heartbeat timeout and more: what a false verdict would take
    assert "hung" not in d.log()
    assert {name: w["pid"] for name, w in d.workers().items()} == before
    assert "master loop stalled" in d.log()
