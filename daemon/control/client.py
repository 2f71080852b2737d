"""The CLI's side of the control endpoint: find the master, send one request, wait.

The master publishes its endpoint, pid and token in <state_dir>/control.json; a tcp://
endpoint also needs the daemon's Curve client key from <state_dir>/curve/.  A missing
file or a dead pid means "not running" at once, without waiting on a socket.
"""

from __future__ import annotations

import itertools
import time
from pathlib import Path
from typing import Any

import orjson
import psutil
import zmq

from daemon.ipc import curve, messages


class NotRunning(Exception):
    pass


class Stopped(NotRunning):
    """The daemon's process ended while we were talking to it."""


def read_control_file(state_dir: Path) -> dict[str, Any]:
    """What the master publishes: endpoint, token, pid, agent listeners."""
    path = state_dir / "control.json"
    try:
        info: dict[str, Any] = orjson.loads(path.read_bytes())
    except FileNotFoundError:
        raise NotRunning(f"workingagents is not running (no {path})") from None
    except PermissionError:
        raise NotRunning(f"cannot read {path}: only the daemon's user may control it") \
            from None
    except orjson.JSONDecodeError:
        raise NotRunning(f"{path} is damaged; is the daemon starting?") from None
    return info


class ControlError(Exception):
    """The master answered with an error."""


_ids = itertools.count(1)


class ControlClient:
    def __init__(self, state_dir: Path) -> None:
        path = state_dir / "control.json"
        info = read_control_file(state_dir)
        self.pid = int(info.get("pid", 0))
        if not self.pid or not _is_alive(self.pid):
            raise NotRunning(f"workingagents is not running (pid {self.pid} from {path} "
                             "is gone)")
        self.endpoint = str(info["endpoint"])
        self._token = str(info["token"])
        self._curve: curve.ClientSide | None = None
        if curve.on_tcp(self.endpoint):
            try:
                self._curve = curve.load_client(state_dir)
            except (OSError, ValueError) as exc:
                reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
                raise NotRunning(f"cannot read the daemon's Curve keys in "
                                 f"{curve.directory(state_dir)} ({reason}): only the "
                                 "daemon's user may control it over tcp://") from None
        self.listening: dict[str, Any] = info.get("listen") or {}

    def call(self, cmd: str, args: dict[str, Any] | None = None,
             timeout: float = 10.0) -> Any:
        ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
        sock = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        if self._curve is not None:
            curve.connect_as(sock, self._curve)
        try:
            sock.connect(self.endpoint)
            rid = next(_ids)
            sock.send(messages.encode({"id": rid, "token": self._token, "cmd": cmd,
                                       "args": args or {}}))
            deadline = time.monotonic() + timeout
            while not sock.poll(100):  # a daemon that stops is told apart from a hung one
                if not self.alive():
                    raise Stopped(f"workingagents stopped (pid {self.pid})")
                if time.monotonic() > deadline:
                    raise NotRunning(f"no answer from the daemon (pid {self.pid}) at "
                                     f"{self.endpoint} within {timeout:g}s")
            reply = messages.decode(sock.recv())
        finally:
            sock.close()
        if not reply.get("ok"):
            raise ControlError(str(reply.get("error")))
        return reply.get("result")

    def alive(self) -> bool:
        return _is_alive(self.pid)


def _is_alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False
