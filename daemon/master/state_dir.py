"""The state dir: made and locked at start (one master per state dir), and the control
file in it by which the CLI finds the master (its endpoint, token and listeners).
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import Any

import orjson

from daemon import __version__
from daemon.config import Settings


class CannotStart(Exception):
    """Something outside the config file stops the daemon from starting (one line)."""


class AlreadyRunning(CannotStart):
    pass


def make(settings: Settings) -> None:
    """The state, runtime and audit dirs, 0700, each usable by this user."""
    for d in (settings.state_dir, settings.runtime_dir, settings.audit_dir):
        try:
            d.mkdir(parents=True, exist_ok=True, mode=0o700)
            if not os.access(d, os.W_OK | os.X_OK):
                raise PermissionError(13, "not writable by this user")
        except OSError as exc:
            raise CannotStart(f"cannot use directory {d}: {exc.strerror}") from None


def lock(state_dir: Path) -> int:
    """Hold the state dir's lock for as long as the returned descriptor stays open."""
    fd = os.open(state_dir / "master.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise AlreadyRunning(f"another master is running with state dir {state_dir}") from None
    return fd


def publish_control_file(path: Path, endpoint: str, token: str,
                         listening: dict[str, Any]) -> None:
    """Written whole or not at all (0600): a CLI never reads half a file."""
    tmp = path.with_name(".control.json.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(orjson.dumps({"endpoint": endpoint, "token": token, "pid": os.getpid(),
                              "version": __version__, "listen": listening}))
    os.replace(tmp, path)
