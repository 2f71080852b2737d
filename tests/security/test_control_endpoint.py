"""Only the daemon's user (and root) controls the daemon: another local user can neither
read control.json, the admin token or the audit log, nor reach the ipc:// control socket,
even holding the token; on a tcp:// control endpoint, which anyone local can reach, a
request without the right token is refused."""

from __future__ import annotations

import json
import os
import socket
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import zmq

NOBODY = 65534
pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to become another user")


def as_nobody(check: Callable[[], Any]) -> Any:
    """Run ``check`` in a forked child that has become uid/gid 65534; its JSON-able
    result (or its exception, as text) comes back over a pipe."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        try:
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            out = json.dumps({"ok": check()})
        except BaseException:
            out = json.dumps({"raised": traceback.format_exc()})
        os.write(write, out.encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        answer = json.loads(pipe.read() or '{"raised": "no answer"}')
    os.waitpid(pid, 0)
    assert "raised" not in answer, answer["raised"]
    return answer["ok"]


def denied(action: Callable[[], Any]) -> str:
    try:
        action()
    except PermissionError:
        return "denied"
    return "allowed"


def control_request(endpoint: str, token: str | None, cmd: str = "status",
                    wait: float = 5.0) -> dict[str, Any] | None:
    ctx = zmq.Context()  # a fresh one: a context must not cross a fork
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        sock.connect(endpoint)
        sock.send(json.dumps({"id": 1, "token": token, "cmd": cmd, "args": {}}).encode())
        return json.loads(sock.recv()) if sock.poll(int(wait * 1000)) else None
    finally:
        sock.close()
        ctx.term()


def test_another_local_user_cannot_read_the_control_files_or_reach_the_ipc_socket(
        start_daemon, state_dir):
    os.chmod(state_dir, 0o755)  # whatever the operator's dir allows, the daemon's files hold
    d = start_daemon()
    d.wait_ready()
    info = json.loads((state_dir / "control.json").read_text())
    endpoint, token = info["endpoint"], info["token"]
    assert endpoint.startswith("ipc://")
    sock_path = endpoint.removeprefix("ipc://")
    audit_file = next((state_dir / "audit").glob("audit-*.jsonl"))
    assert control_request(endpoint, token)["ok"], "the owner gets in"

    def probe() -> dict[str, Any]:
        def connect() -> None:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.connect(sock_path)
        return {
            "control.json": denied(lambda: (state_dir / "control.json").read_text()),
            "admin.token": denied(lambda: (state_dir / "admin.token").read_text()),
            "runtime dir": denied(lambda: os.listdir(Path(sock_path).parent)),
            "audit dir": denied(lambda: os.listdir(state_dir / "audit")),
            "audit file": denied(lambda: audit_file.read_bytes()),
            "control socket": denied(connect),
            # even a stolen token is no use: the socket file itself keeps nobody out
            "answer with the token": control_request(endpoint, token, "stop", wait=2.0),
        }
    assert as_nobody(probe) == {
        "control.json": "denied", "admin.token": "denied", "runtime dir": "denied",
        "audit dir": "denied", "audit file": "denied", "control socket": "denied",
        "answer with the token": None}
    assert d.proc.poll() is None and d.status()["daemon"]["healthy"]


def test_a_tcp_control_endpoint_refuses_any_request_without_the_right_token(start_daemon,
                                                                           state_dir):
    os.chmod(state_dir, 0o755)
    d = start_daemon(control={"endpoint": "tcp://127.0.0.1:*"})
    d.wait_ready()
    info = json.loads((state_dir / "control.json").read_text())
    endpoint, token = info["endpoint"], info["token"]
    assert endpoint.startswith("tcp://127.0.0.1:")
    def probe() -> dict[str, Any]:
        tokens = (None, "", "wrong", token[:-1], token + "x", token.upper())
        with ThreadPoolExecutor(len(tokens)) as pool:  # each waits out its 5 s at once
            answers = pool.map(lambda t: control_request(endpoint, t, "stop"), tokens)
            return {"control.json": denied(lambda: (state_dir / "control.json").read_text()),
                    **dict(zip(map(repr, tokens), answers, strict=True))}
    answers = as_nobody(probe)
    assert answers.pop("control.json") == "denied"
    # on tcp:// the endpoint is CurveZMQ: without the keys in the state dir nothing gets
    # past the handshake, whatever token it brings (the right one included)
    assert answers == {k: None for k in answers}
    assert control_request(endpoint, token) is None
    assert d.cli("status").returncode == 0, "the CLI, with the keys, gets in"
    assert d.proc.poll() is None
    assert token not in d.log()
