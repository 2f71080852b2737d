"""permanent, transient and temporary children, as OTP defines them."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from tests.conftest import wait_for


def starts(path: Path) -> int:
    return len(path.read_text().split()) if path.exists() else 0


def test_permanent_child_is_restarted_even_after_a_normal_exit(start_daemon, state_dir):
    counter = state_dir / "starts"
    daemon = start_daemon(tree={"id": "root", "max_restarts": 50, "children": [
        {"id": "p", "restart": "permanent",
         "options": {"exit_after": 0.3, "exit_code": 0, "starts_file": str(counter)}}]})
    daemon.wait_ready()
    wait_for(lambda: starts(counter) >= 3, 10, "three starts")
    assert "root/p crashed (exit code 0)" in daemon.log()


def test_transient_child_is_not_restarted_after_exit_code_0(start_daemon, state_dir):
    counter = state_dir / "starts"
    daemon = start_daemon(tree={"id": "root", "children": [
        {"id": "t", "restart": "transient",
         "options": {"exit_after": 0.2, "exit_code": 0, "starts_file": str(counter)}},
        {"id": "other"}]})
    daemon.wait_ready()
    wait_for(lambda: "root/t exited (exit code 0)" in daemon.log(), 10, "normal exit")
    time.sleep(0.5)
    assert starts(counter) == 1
    worker = daemon.workers()["t"]
    assert worker["state"] == "stopped" and worker["pid"] is None
    assert daemon.status()["daemon"]["healthy"], "a finished transient child is healthy"


def test_transient_child_is_restarted_after_an_abnormal_exit(start_daemon, state_dir):
    counter = state_dir / "starts"
    daemon = start_daemon(tree={"id": "root", "max_restarts": 50, "children": [
        {"id": "t", "restart": "transient",
         "options": {"exit_after": 0.3, "exit_code": 3, "starts_file": str(counter)}}]})
    daemon.wait_ready()
    wait_for(lambda: starts(counter) >= 2, 10, "a restart")
    assert "root/t crashed (exit code 3)" in daemon.log()


def test_temporary_child_is_never_restarted_and_leaves_the_tree(start_daemon):
    daemon = start_daemon(tree={"id": "root", "children": [
        {"id": "tmp", "restart": "temporary"}, {"id": "keep"}]})
    daemon.wait_ready()
    pids = daemon.pids()
    os.kill(pids["tmp"], signal.SIGKILL)
    wait_for(lambda: "tmp" not in daemon.workers(), 10, "the temporary child to be removed")
    assert daemon.pids() == {"keep": pids["keep"]}
    assert "not restarted" in daemon.log()


def test_shutdown_timeout_ends_in_sigkill_for_a_worker_that_ignores_sigterm(start_daemon):
    daemon = start_daemon(tree={"id": "root", "children": [
        {"id": "stubborn", "shutdown": 0.5, "options": {"ignore_term": True}}]})
    daemon.wait_ready()
    pid = daemon.pids()["stubborn"]
    daemon.proc.send_signal(signal.SIGTERM)
    assert daemon.wait_exit(10) == 0
    assert "did not stop within 0.5s of SIGTERM; SIGKILL" in daemon.log()
    wait_for(lambda: not Path(f"/proc/{pid}").exists(), 5, "the stubborn worker to be gone")


def test_a_worker_that_exits_before_its_ready_is_seen_is_restarted_not_taken_as_serving(
        start_daemon, state_dir):
    counter, stall = state_dir / "starts", state_dir / "stall"
    daemon = start_daemon(tree={"id": "root", "max_restarts": 50, "children": [
        {"id": "w", "options": {"starts_file": str(counter),
                                "stall_master_file": str(stall)}}]})
    daemon.wait_ready()

    def serving() -> bool:
        worker = daemon.workers()["w"]
        return worker["state"] == "ready" and worker["pid"] is not None
    # which of the READY and the exit the resumed master reads first is up to the
    # kernel: a few rounds, so that the both-at-once case comes up
    for _ in range(8):
        stall.touch()  # the next incarnation reports READY, exits while the master is stopped
        os.kill(daemon.pids()["w"], signal.SIGKILL)
        wait_for(lambda: not stall.exists(), 10, "the stalling start")
        wait_for(serving, 15, "a live incarnation to serve (not the dead one marked ready)")
