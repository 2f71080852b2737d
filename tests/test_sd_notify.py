"""sd_notify, seen on a real datagram socket that the test binds as NOTIFY_SOCKET."""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemon.supervision.sdnotify import Notifier
from tests.conftest import wait_for


class NotifySocket:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.setblocking(False)
        self.messages: list[str] = []

    def drain(self) -> list[str]:
        while True:
            try:
                self.messages.append(self.sock.recv(4096).decode())
            except BlockingIOError:
                return self.messages

    def seen(self, needle: str) -> bool:
        return any(needle in m for m in self.drain())


@pytest.fixture
def notify(state_dir: Path) -> Iterator[NotifySocket]:
    sock = NotifySocket(state_dir / "notify.sock")
    yield sock
    sock.sock.close()


def test_ready_reload_watchdog_and_stopping_reach_the_notify_socket(start_daemon, notify):
    daemon = start_daemon(env={"NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": "400000"})
    wait_for(lambda: notify.seen("READY=1"), 20, "READY=1")
    ready = next(m for m in notify.messages if "READY=1" in m)
    assert f"MAINPID={daemon.pid}" in ready and "STATUS=serving; 3 workers" in ready
    wait_for(lambda: sum("WATCHDOG=1" in m for m in notify.drain()) >= 3, 5, "watchdog pings")

    daemon.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "reload done" in daemon.log(), 10, "the reload")
    msgs = notify.drain()
    reloading = next(i for i, m in enumerate(msgs) if "RELOADING=1" in m)
    assert "MONOTONIC_USEC=" in msgs[reloading]
    usec = int(msgs[reloading].split("MONOTONIC_USEC=")[1].split()[0])
    assert abs(usec - time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000) < 30_000_000
    assert any("READY=1" in m for m in msgs[reloading + 1:]), "READY=1 after the reload"
    assert all(f"MAINPID={daemon.pid}" in m for m in msgs if "MAINPID=" in m), "same main PID"

    daemon.proc.send_signal(signal.SIGTERM)
    assert daemon.wait_exit(15) == 0
    assert notify.seen("STOPPING=1")


def test_watchdog_pings_stop_while_the_tree_is_unhealthy(start_daemon, notify, state_dir):
    flap = state_dir / "flap"
    daemon = start_daemon(
        env={"NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": "200000"},
        supervision={"backoff_initial": 1.0, "backoff_max": 1.0},
        tree={"id": "root", "max_restarts": 100, "children": [
            {"id": "a", "options": {"flap_file": str(flap)}}]})
    wait_for(lambda: notify.seen("READY=1"), 20, "READY=1")
    flap.touch()
    os.kill(daemon.pids()["a"], signal.SIGKILL)
    wait_for(lambda: "backoff" in daemon.log(), 10, "a restart in backoff")
    notify.drain()
    notify.messages.clear()
    time.sleep(0.6)  # inside a 1s backoff: 'a' is down, so the tree is unhealthy
    assert not notify.seen("WATCHDOG=1")
    flap.unlink()
    wait_for(lambda: notify.seen("WATCHDOG=1"), 10, "pings to resume once healthy")


def test_notifier_speaks_to_the_abstract_namespace():
    name = f"wa-test-{os.getpid()}"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind("\0" + name)
    try:
        n = Notifier({"NOTIFY_SOCKET": "@" + name, "WATCHDOG_USEC": "30000000"})
        assert n.watchdog_interval == 15.0
        n.status("hello")
        assert server.recv(100) == b"STATUS=hello"
        n.close()
    finally:
        server.close()


def test_notifier_is_silent_without_notify_socket_and_ignores_foreign_watchdog():
    n = Notifier({"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "1"})
    assert n.send("READY=1") is False
    assert n.watchdog_interval is None
