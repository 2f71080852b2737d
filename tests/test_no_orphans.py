"""No orphans, no zombies: whatever dies, the processes it owned go with it."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import psutil

from tests.conftest import alive, wait_for


def test_master_sigkill_leaves_no_worker_behind_within_5s(start_daemon, state_dir):
    daemon = start_daemon(tree={"id": "root", "children": [
        {"id": "a", "options": {"grandchild_file": str(state_dir / "gc")}},
        {"id": "sub", "children": [{"id": "b"}, {"id": "c"}]}]})
    daemon.wait_ready()
    everyone = [p.pid for p in daemon.descendants()]
    grandchild = int((state_dir / "gc").read_text())
    assert grandchild in everyone and len(everyone) >= 5  # forkserver, 3 workers, sleep
    os.kill(daemon.pid, signal.SIGKILL)
    daemon.wait_exit(5)
    started = time.monotonic()
    wait_for(lambda: not any(alive(p) for p in everyone), 5,
             "every worker, grandchild and helper to exit")
    print(f"all {len(everyone)} processes gone {time.monotonic() - started:.2f}s after SIGKILL")


def test_master_sigkill_also_ends_a_stopped_worker(start_daemon):
    daemon = start_daemon(tree={"id": "root", "children": [{"id": "a"}]})
    daemon.wait_ready()
    everyone = [p.pid for p in daemon.descendants()]
    os.kill(daemon.pids()["a"], signal.SIGSTOP)
    os.kill(daemon.pid, signal.SIGKILL)
    daemon.wait_exit(5)
    wait_for(lambda: not any(alive(p) for p in everyone), 5, "the stopped worker to die")


def test_graceful_stop_leaves_no_process_and_no_control_file(start_daemon, state_dir):
    daemon = start_daemon(tree={"id": "root", "children": [
        {"id": "a", "options": {"grandchild_file": str(state_dir / "gc")}}, {"id": "b"}]})
    daemon.wait_ready()
    everyone = [p.pid for p in daemon.descendants()]
    out = daemon.cli("stop")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(f"stopped (pid {daemon.pid})")
    assert daemon.wait_exit(10) == 0
    # the grandchild got its SIGKILL with its worker's group; it may still be tearing
    # down (no cmdline any more, parent init) the instant the master is gone
    wait_for(lambda: not any(alive(p) for p in everyone), 5, "every process to be gone")
    assert not (state_dir / "control.json").exists()
    log = daemon.log()
    assert log.index("root/b stopped") < log.index("root/a stopped"), "reverse start order"


def test_killing_a_worker_takes_its_grandchildren_and_leaves_no_zombie(start_daemon, state_dir):
    gc_file = state_dir / "gc"
    daemon = start_daemon(tree={"id": "root", "children": [
        {"id": "a", "options": {"grandchild_file": str(gc_file)}}]})
    daemon.wait_ready()
    first = int(gc_file.read_text())
    os.kill(daemon.pids()["a"], signal.SIGKILL)
    wait_for(lambda: int(gc_file.read_text()) != first, 10, "the worker's restart")
    wait_for(lambda: not alive(first), 5, "the old grandchild to be killed")

    def no_zombies() -> bool:
        return not [p for p in daemon.descendants() if p.status() == psutil.STATUS_ZOMBIE]
    wait_for(no_zombies, 5, "no zombie among the master's descendants")
    assert not Path(f"/proc/{first}").exists() or not alive(first)


def test_no_zombies_after_many_crashes(start_daemon):
    daemon = start_daemon(tree={"id": "root", "max_restarts": 100, "children": [
        {"id": "a"}, {"id": "b"}]})
    daemon.wait_ready()
    for _ in range(5):
        pids = daemon.pids()
        for pid in pids.values():
            os.kill(pid, signal.SIGKILL)
        wait_for(lambda p=pids: len(daemon.pids()) == 2
                 and not set(daemon.pids().values()) & set(p.values()), 10, "restarts")
    zombies = [p.pid for p in daemon.descendants() if p.status() == psutil.STATUS_ZOMBIE]
    assert zombies == []


def test_a_killed_forkserver_is_relaunched_and_every_worker_comes_back(start_daemon):
    daemon = start_daemon(tree={"id": "root", "children": [{"id": "a"}, {"id": "b"}]})
    daemon.wait_ready()
    before = daemon.pids()
    forkserver = next(p for p in psutil.Process(daemon.pid).children()
                      if "forkserver" in " ".join(p.cmdline()))
    forkserver.kill()
    wait_for(lambda: len(daemon.pids()) == 2
             and not set(daemon.pids().values()) & set(before.values()), 15,
             "both workers to be restarted from a new forkserver")
    # a restarted worker is listed from its start, and healthy from its READY
    wait_for(lambda: daemon.status()["daemon"]["healthy"], 15, "the tree to be healthy")
    assert not any(alive(p) for p in before.values())
    zombies = [p.pid for p in daemon.descendants() if p.status() == psutil.STATUS_ZOMBIE]
    assert zombies == []
