"""The shipped unit: verified by systemd-analyze, and its sandbox does not break Python.

systemd is not PID 1 on the test machines, so the sandbox test rebuilds the unit's main
constraints with util-linux: a private mount namespace whose root is read-only except the
state and runtime dirs (ProtectSystem=strict, StateDirectory=, RuntimeDirectory=), a
private /tmp (PrivateTmp=), an unprivileged uid (DynamicUser=), no_new_privs
(NoNewPrivileges=) and an empty capability bounding set (CapabilityBoundingSet=).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import CLI, alive, wait_for

ROOT = Path(__file__).parent.parent
UNIT = ROOT / "systemd" / "workingagents.service"
DROPIN = ROOT / "systemd" / "workingagents.service.d" / "notify-reload.conf"


def settings(path: Path) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        if "=" in line and not line.lstrip().startswith(("#", "[")):
            key, _, value = line.partition("=")
            out.setdefault(key.strip(), []).append(value.strip())
    return out


def test_unit_declares_notify_reload_watchdog_and_hardening():
    unit = settings(UNIT)
    expected = {
        "Type": "notify", "NotifyAccess": "main", "ExecReload": "/bin/kill -HUP $MAINPID",
        "Restart": "on-failure", "KillMode": "mixed", "DynamicUser": "yes",
        "NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes",
        "PrivateTmp": "yes", "StateDirectory": "workingagents",
        "RuntimeDirectory": "workingagents", "CapabilityBoundingSet": "",
    }
    for key, value in expected.items():
        assert unit.get(key) == [value], key
    assert int(unit["WatchdogSec"][0]) > 0
    assert "MemoryDenyWriteExecute" not in unit, "breaks cffi callbacks"
    assert unit["ExecStart"][0].endswith("workingagents serve")
    dropin = settings(DROPIN)
    assert dropin == {"Type": ["notify-reload"], "ExecReload": [""]}


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_unit_passes_systemd_analyze_verify(tmp_path):
    # verify checks that ExecStart exists: point it at this checkout's interpreter
    unit = tmp_path / "workingagents.service"
    unit.write_text(UNIT.read_text().replace("/opt/workingagents/bin/workingagents serve",
                                             f"{sys.executable} -m daemon serve"))
    out = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "workingagents.service" not in out.stderr, out.stderr


SANDBOX = r"""
set -e
mount --make-rprivate /
mount --bind "$WA_STATE" "$WA_STATE"               # StateDirectory= stays writable
i=0                                                # hold what the tmpfs below will hide
while read -r keep; do
  [ -n "$keep" ] || continue
  mkdir -p "$WA_STATE/.keep/$i"; mount --bind "$keep" "$WA_STATE/.keep/$i"; i=$((i+1))
done <<< "$WA_KEEP"
mount -o remount,bind,ro /                         # ProtectSystem=strict
mount -t tmpfs -o mode=1777 tmpfs /tmp             # PrivateTmp=
[ -z "$WA_HIDE_ROOT" ] || mount -t tmpfs -o mode=0755 tmpfs /root   # ProtectHome=
i=0
while read -r keep; do
  [ -n "$keep" ] || continue
  mkdir -p "$keep"; mount --bind "$WA_STATE/.keep/$i" "$keep"; i=$((i+1))
done <<< "$WA_KEEP"
exec setpriv --reuid=65534 --regid=65534 --clear-groups --no-new-privs \
  --inh-caps=-all --bounding-set=-all "$@"                         # DynamicUser=, caps
"""


@pytest.fixture
def sandbox_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="wa-hz-", dir="/var/tmp"))
    yield path
    subprocess.run(["rm", "-rf", str(path)], check=False)


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare")
                    or not shutil.which("setpriv"), reason="needs root, unshare and setpriv")
def test_daemon_serves_inside_the_units_sandbox_as_an_unprivileged_user(sandbox_dir):
    state, run = sandbox_dir / "state", sandbox_dir / "run"
    for d in (state, run):
        d.mkdir()
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(sandbox_dir / "notify"))
    os.chmod(sandbox_dir / "notify", 0o666)
    notify.settimeout(20)
    os.chown(sandbox_dir, 65534, 65534)
    for d in (state, run):
        os.chown(d, 65534, 65534)
    real = os.path.realpath(sys.executable)
    # The interpreter, its packages and this checkout must stay visible to uid 65534:
    # whatever of them lies under /tmp or /root (0700) is bound back in.
    needed = {real, sys.prefix, sys.base_prefix, str(ROOT)}
    keep = sorted({"/".join(p.split("/")[:3]) for p in needed
                   if p.startswith(("/tmp/", "/root/"))})
    cfg = sandbox_dir / "wa.toml"  # built-in defaults, but free ports
    cfg.write_text('[listen]\ntcp = "127.0.0.1:0"\nzmq = "tcp://127.0.0.1:*"\n'
                   'http = "127.0.0.1:0"\n')
    os.chmod(cfg, 0o644)
    env = {"PATH": os.environ["PATH"], "WA_STATE": str(sandbox_dir),
           "WORKINGAGENTS_CONFIG": str(cfg),
           "WA_KEEP": "\n".join(keep),
           "WA_HIDE_ROOT": "1" if any(k.startswith("/root/") for k in keep) else "",
           "STATE_DIRECTORY": str(state), "RUNTIME_DIRECTORY": str(run),
           "NOTIFY_SOCKET": str(sandbox_dir / "notify"), "HOME": "/nonexistent",
           "PYTHONPATH": str(ROOT), "PYTHONDONTWRITEBYTECODE": "1"}
    script = sandbox_dir / "sandbox.sh"
    script.write_text(SANDBOX)
    log = open(sandbox_dir / "log", "wb")  # noqa: SIM115
    master = subprocess.Popen(["unshare", "--mount", "bash", str(script), sys.executable, "-m",
                               "daemon", "serve"], env=env, stdout=log, stderr=log)
    outside = {**os.environ, "STATE_DIRECTORY": str(state), "RUNTIME_DIRECTORY": str(run)}
    outside.pop("WORKINGAGENTS_CONFIG", None)
    try:
        try:
            first = notify.recv(4096)
        except TimeoutError:
            raise AssertionError((sandbox_dir / "log").read_text()) from None
        assert b"READY=1" in first, (sandbox_dir / "log").read_text()
        out = subprocess.run([*CLI, "status", "--json"], env=outside, capture_output=True,
                             text=True, timeout=30)
        assert out.returncode == 0, out.stderr
        import json
        snap = json.loads(out.stdout)
        from daemon.control.status import workers_in
        everyone = workers_in(snap["tree"])
        assert sorted(everyone) == ["audit", "gateway-0", "gateway-1"]
        assert all(w["state"] == "ready" for w in everyone.values())
        workers = [everyone["gateway-0"], everyone["gateway-1"]]
        assert Path(f"/proc/{snap['daemon']['pid']}/status").read_text().count("65534") >= 1
        os.kill(workers[0]["pid"], signal.SIGKILL)  # the forkserver works in the sandbox
        wait_for(lambda: "gateway-0 restarted" in (sandbox_dir / "log").read_text(), 10,
                 "a restart inside the sandbox")
        master.send_signal(signal.SIGTERM)
        assert master.wait(20) == 0, (sandbox_dir / "log").read_text()
        assert not any(alive(w["pid"]) for w in workers)
    finally:
        if master.poll() is None:
            master.kill()
            master.wait(5)
        notify.close()
        log.close()
