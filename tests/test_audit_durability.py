"""Acknowledged means durable: crashes, an audit process that stops, a full disk."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from daemon.protocol.jsonrpc import AUDIT_UNAVAILABLE, WORKER_CRASHED, RpcError
from tests.audit_helpers import audit_dir, calls, records, verify
from tests.conftest import Daemon, alive, wait_for
from tests.gateway_helpers import agent, gateway_config, shard


class Load:
    """Agents calling echo with unique keys; remembers each key whose result came back."""

    def __init__(self, daemon: Daemon, agents: list[str]) -> None:
        self.daemon = daemon
        self.acked: list[str] = []
        self.failed = 0
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(name, i), daemon=True)
                        for i, name in enumerate(agents)]
        for t in self.threads:
            t.start()

    def _run(self, name: str, index: int) -> None:
        i = 0
        while not self.stop.is_set():
            try:
                with agent(self.daemon, name, timeout=15) as client:
                    while not self.stop.is_set():
                        key = f"{index}-{i}"
                        i += 1
                        result = client.call_tool("echo", {"k": key})
                        if result.get("isError") is not True:
                            self.acked.append(key)
            except (OSError, RpcError, TimeoutError, ValueError):
                self.failed += 1
                time.sleep(0.02)

    def finish(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(20)


def audit_pid(d: Daemon) -> int:
    return wait_for(lambda: d.pids().get("audit"), 10, "the audit process")


def test_kill_9_under_load_loses_no_acknowledged_record(start_daemon, state_dir):
    d = start_daemon(extra={**gateway_config(), "audit": {"fsync": "batch"}})
    d.wait_ready()
    load = Load(d, ["bob", "alice", "bob", "alice"])
    wait_for(lambda: len(load.acked) > 200, 20, "calls under load")
    for _ in range(3):  # the audit process, while records are in flight
        old = audit_pid(d)
        os.kill(old, signal.SIGKILL)
        wait_for(lambda old=old: d.pids().get("audit") not in (None, old), 10,
                 "the audit process to restart")
        seen = len(load.acked)
        wait_for(lambda seen=seen: len(load.acked) > seen + 100, 20, "calls after the restart")
    victim = d.pids()["gateway-0"]  # a gateway worker
    os.kill(victim, signal.SIGKILL)
    wait_for(lambda: d.pids().get("gateway-0") not in (None, victim), 10, "gateway-0 again")
    seen = len(load.acked)
    wait_for(lambda: len(load.acked) > seen + 100, 20, "calls after the worker restart")
    workers = list(d.pids().values())
    os.kill(d.pid, signal.SIGKILL)  # and the master: the whole tree goes
    wait_for(lambda: not any(alive(p) for p in workers), 10, "the workers to follow the master")
    load.finish()
    logged = {c["args"]["k"] for c in calls(audit_dir(state_dir)) if "args" in c}
    missing = [k for k in load.acked if k not in logged]
    assert not missing, f"{len(missing)} of {len(load.acked)} acknowledged calls unrecorded"
    assert len(load.acked) > 600
    assert "unacknowledged records again" in d.log()  # the resend path was taken
    # records sent again after an audit restart were written once (dropped by id)
    ids = [r["id"] for r in records(audit_dir(state_dir)) if "id" in r]
    assert len(ids) == len(set(ids))
    out = verify(audit_dir(state_dir))
    assert out.returncode == 0, out.stdout + out.stderr


def test_calls_wait_for_a_stopped_audit_process_then_fail_closed(start_daemon, state_dir):
    d = start_daemon(extra={**gateway_config(), "audit": {"timeout": 0.5}},
                     supervision={"heartbeat_timeout": 5.0})  # no liveness kill meanwhile
    d.wait_ready()
    pid = audit_pid(d)
    with agent(d, "bob") as bob:
        bob.call_tool("echo", {"k": "before"})
        os.kill(pid, signal.SIGSTOP)
        try:
            started = time.monotonic()
            with pytest.raises(RpcError) as refused:
                bob.call_tool("echo", {"k": "held"})
            assert time.monotonic() - started >= 0.45
            assert refused.value.code == AUDIT_UNAVAILABLE
            assert "no answer from the audit process" in refused.value.message
            with pytest.raises(RpcError):  # a tool with effects does not even start
                bob.call_tool("sleep", {"seconds": 0})
        finally:
            os.kill(pid, signal.SIGCONT)
        assert bob.call_tool("echo", {"k": "after"})["content"][0]["text"] == '{"k":"after"}'
    directory = audit_dir(state_dir)
    # the held records were sent again and written: nothing ran unrecorded
    wait_for(lambda: len([r for r in records(directory) if r["kind"] == "withheld"]) == 2, 10,
             "the withheld notes")
    assert [c["args"]["k"] for c in calls(directory) if "args" in c and "k" in c["args"]] \
        == ["before", "held", "after"]
    intents = calls(directory, "intent")
    assert [i["tool"] for i in intents] == ["sleep"]
    assert not any(c.get("intent") and c["outcome"]["status"] == "ok" for c in calls(directory))


def _namespace_prefix() -> list[str] | None:
    """A private mount namespace where a small tmpfs can be mounted, if this host has one."""
    if shutil.which("unshare") is None:
        return None
    prefix = ["unshare", "-m", "--propagation", "private"] if os.geteuid() == 0 \
        else ["unshare", "-rm"]
    probe = subprocess.run([*prefix, "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt"],
                           capture_output=True, timeout=10)
    return prefix if probe.returncode == 0 else None


def test_disk_full_fails_closed_and_recovers(start_daemon, state_dir):
    prefix = _namespace_prefix()
    if prefix is None:
        pytest.skip("no unprivileged mount namespace for a small tmpfs on this host")
    mnt = state_dir / "auditfs"
    mnt.mkdir()
    d = start_daemon(extra={**gateway_config(), "audit": {"dir": str(mnt), "timeout": 3.0}},
                     wrap=lambda argv: [*prefix, "sh", "-c",
                                        'mount -t tmpfs -o size=256k tmpfs "$0" && exec "$@"',
                                        str(mnt), *argv])
    d.wait_ready()
    view = Path(f"/proc/{d.pid}/root") / mnt.relative_to("/")  # the daemon's view of it
    assert (view / "audit-00000001.jsonl").exists()
    assert not (mnt / "audit-00000001.jsonl").exists()  # really a separate filesystem
    with agent(d, "bob") as bob:
        bob.call_tool("echo", {"k": "room"})
        with (view / "filler").open("wb", buffering=0) as filler, \
                contextlib.suppress(OSError):
            while True:
                filler.write(b"x" * 4096)
        with pytest.raises(OSError) as full:
            (view / "probe").write_bytes(b"x" * 8192)
        assert full.value.errno == errno.ENOSPC
        refused = None
        for i in range(64):  # a file's last page may still have room for a record or two
            started = time.monotonic()
            try:
                bob.call_tool("echo", {"k": f"full-{i}"})
            except RpcError as exc:
                refused = exc
                break
        assert refused is not None, "calls kept succeeding on a full disk"
        assert refused.code == AUDIT_UNAVAILABLE and "disk full" in refused.message
        assert time.monotonic() - started < 2.0  # told at once, not after the timeout
        refused_key = f"full-{i}"
        assert "cannot write the log: disk full" in d.log()
        wait_for(lambda: "audit: FAILING: disk full" in d.cli("status").stdout, 5,
                 "status to show the failing audit log")
        (view / "filler").unlink()
        (view / "probe").unlink(missing_ok=True)
        assert bob.call_tool("echo", {"k": "space"})["content"][0]["text"] == '{"k":"space"}'
    wait_for(lambda: refused_key in [c["args"]["k"] for c in calls(view) if "args" in c], 10,
             "the refused call's record, sent again")
    assert "writing again after: disk full" in d.log()
    out = verify(view)
    assert out.returncode == 0, out.stdout + out.stderr


def test_a_call_lost_with_its_worker_is_recorded_before_the_agent_hears(start_daemon,
                                                                        state_dir):
    d = start_daemon(extra=gateway_config())
    d.wait_ready()
    victim = d.pids()[shard("bob")]
    with agent(d, "bob") as bob:
        result: dict[str, object] = {}

        def call() -> None:
            try:
                bob.call_tool("sleep", {"seconds": 5})
            except RpcError as exc:
                result["code"] = exc.code
        caller = threading.Thread(target=call)
        caller.start()
        wait_for(lambda: calls(audit_dir(state_dir), "intent"), 10, "the intent record")
        os.kill(victim, signal.SIGKILL)
        caller.join(10)
    assert result["code"] == WORKER_CRASHED
    (intent,) = calls(audit_dir(state_dir), "intent")
    (lost,) = calls(audit_dir(state_dir), "lost")
    assert intent["tool"] == lost["tool"] == "sleep" and lost["agent"] == "bob"
    assert lost["worker"] == shard("bob") and lost["outcome"]["code"] == WORKER_CRASHED
