"""Restart intensity, escalation up the tree, backoff, and start failures vs crash loops."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from daemon.supervision.intensity import Backoff, ProbeDelay, RestartIntensity
from daemon.supervision.spec import Intensity, Liveness, Probe
from tests.conftest import wait_for


def test_intensity_counts_restarts_in_a_sliding_window():
    window = RestartIntensity(Intensity(max_restarts=2, max_seconds=10))
    assert window.record(0) and window.record(1)
    assert not window.record(2), "a third restart within 10s exceeds 2"
    window.reset()
    assert window.record(20) and window.record(25)
    assert window.record(36), "restarts older than 10s no longer count"


def test_backoff_is_immediate_then_doubles_then_resets_after_a_quiet_period():
    b = Backoff(Liveness(backoff_initial=0.1, backoff_max=0.5, backoff_reset=10))
    assert [b.next_delay(1) for _ in range(5)] == [0.0, 0.1, 0.2, 0.4, 0.5]
    assert b.next_delay(up_for=11) == 0.0, "a child that stayed up 10s starts afresh"


def test_probes_of_a_subtree_that_gave_up_double_up_to_a_cap_and_reset_once_it_stays_up():
    p = ProbeDelay(Probe(initial=1, max=10, reset=60))
    assert [p.next_delay(0) for _ in range(6)] == [1, 2, 4, 8, 10, 10]
    assert p.next_delay(up_for=61) == 1, "it stayed up a minute: the next probe is quick"


def test_a_flapping_child_escalates_to_the_root_and_the_daemon_exits_1(start_daemon, state_dir):
    flap = state_dir / "flap"
    flap.touch()
    daemon = start_daemon(tree={"id": "root", "max_restarts": 1, "max_seconds": 30, "children": [
        {"id": "sub", "max_restarts": 2, "max_seconds": 30, "children": [
            {"id": "flappy", "options": {"flap_file": str(flap)}}]},
        {"id": "steady"}]})
    assert daemon.wait_exit(30) == 1
    log = daemon.log()
    assert "root/sub: restart intensity exceeded: root/sub/flappy crashed (exit code 1)" in log
    assert "root/sub: shut down; escalating to root" in log
    assert "root: restart intensity exceeded: root/sub crashed" in log
    assert "giving up" in log and "exiting with status 1" in log
    assert not (state_dir / "control.json").exists()


def test_escalation_stays_in_its_subtree_when_the_parent_can_absorb_it(start_daemon, state_dir):
    flap = state_dir / "flap"
    flap.touch()
    daemon = start_daemon(tree={"id": "root", "max_restarts": 10, "max_seconds": 30, "children": [
        {"id": "steady"},
        {"id": "sub", "max_restarts": 2, "max_seconds": 30, "children": [
            {"id": "flappy", "options": {"flap_file": str(flap)}}]}]})
    wait_for(lambda: "escalating to root" in daemon.log(), 20, "the subtree to give up")
    flap.unlink()  # the cause goes away: the restarted subtree stays up
    wait_for(lambda: daemon.status()["daemon"]["healthy"], 10, "a healthy tree")
    pids = daemon.pids()
    assert set(pids) == {"steady", "flappy"}
    first_steady = int(daemon.log().split("root/steady started: pid ")[1].split(",")[0])
    assert pids["steady"] == first_steady, "the sibling subtree was never touched"
    assert daemon.proc.poll() is None


def test_start_failures_are_told_apart_from_crashes_and_count_toward_intensity(
        start_daemon, state_dir):
    daemon = start_daemon(tree={"id": "root", "max_restarts": 3, "max_seconds": 30,
                                "children": [{"id": "broken", "options": {"fail_start": 3}}]})
    assert daemon.wait_exit(30) == 1
    log = daemon.log()
    assert "root/broken failed to start: pid" in log
    assert "exit code 3 before READY" in log
    assert "restart intensity exceeded: root/broken failed to start" in log
    assert "backoff" in log, "restarts were spaced by the backoff"


def test_a_worker_that_never_reports_ready_is_killed_after_the_start_timeout(
        start_daemon, state_dir):
    daemon = start_daemon(
        supervision={"start_timeout": 0.5},
        tree={"id": "root", "max_restarts": 1, "children": [
            {"id": "mute", "options": {"no_ready": True}}]})
    assert daemon.wait_exit(30) == 1
    assert "root/mute failed to start: pid" in daemon.log()
    assert "sent no READY within 0.5s; killed" in daemon.log()


def test_a_restarted_worker_gets_a_new_identity_and_is_ready_before_counted(start_daemon):
    daemon = start_daemon(tree={"id": "root", "children": [{"id": "w"}]})
    daemon.wait_ready()
    before = daemon.workers()["w"]
    os.kill(before["pid"], signal.SIGKILL)
    wait_for(lambda: daemon.workers()["w"]["incarnation"] == 2
             and daemon.workers()["w"]["state"] == "ready", 10, "the new incarnation")
    assert daemon.workers()["w"]["last_exit"] == "killed by SIGKILL"
    assert Path(f"/proc/{before['pid']}").exists() is False
