"""agents.d: one file per agent beside the config file, written by `agents add`.

Each ``agents.d/*.toml`` may hold only ``[agents.NAME]`` tables, so that the command
line can add and revoke agents without rewriting the sysadmin's config file (and its
comments).  The directory sits beside the config file in use, or in the state dir when
the daemon runs on built-in defaults.  A file anyone but its owner may write is refused:
whoever can write it can make an agent.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

import msgspec

DIRNAME = "agents.d"
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")  # also a file name: no dots, no slashes


class AgentsDirError(Exception):
    """A file in agents.d that cannot be used; the message names the file and the key."""


class AgentSection(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    # An agent has a token, a Curve key, or both (config._check_agent insists on one).
    token_sha256: str = ""  # hex sha256 of the agent's bearer token
    curve_public_key: str = ""  # Z85: its Curve key stands for a token on [listen] zmq_curve
    roles: list[str] = msgspec.field(default_factory=list)


class AgentsFile(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    agents: dict[str, AgentSection] = msgspec.field(default_factory=dict)


def location(config_file: Path | None, state_dir: Path) -> Path:
    return (config_file.parent if config_file is not None else state_dir) / DIRNAME


def read(directory: Path) -> dict[str, tuple[AgentSection, Path]]:
    """Every agent defined in ``directory``/*.toml, with its file (none: no directory)."""
    found: dict[str, tuple[AgentSection, Path]] = {}
    try:
        files = sorted(p for p in directory.iterdir()
                       if p.suffix == ".toml" and not p.name.startswith("."))
    except FileNotFoundError:
        return found
    except OSError as exc:
        raise AgentsDirError(f"{directory}: cannot read: {exc.strerror}") from None
    for path in files:
        for name, agent in read_file(path).agents.items():
            if name in found:
                raise AgentsDirError(f"{path}: key agents.{name}: agent {name} is also "
                                     f"defined in {found[name][1]}")
            found[name] = (agent, path)
    return found


def read_file(path: Path) -> AgentsFile:
    try:
        info = path.stat()
        raw = path.read_bytes()
    except OSError as exc:
        raise AgentsDirError(f"{path}: cannot read: {exc.strerror}") from None
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise AgentsDirError(f"{path}: writable by others than its owner; refused "
                             "(chmod go-w)")
    try:
        return msgspec.toml.decode(raw, type=AgentsFile)
    except msgspec.ValidationError as exc:
        text, sep, where = str(exc).rpartition(" - at ")
        key = where.strip("`").removeprefix("$").lstrip(".") if sep else ""
        raise AgentsDirError(f"{path}: key {key or '(top level)'}: {text or exc} (a file "
                             f"in {DIRNAME} holds only [agents.NAME] tables)") from None
    except msgspec.DecodeError as exc:
        raise AgentsDirError(f"{path}: not valid TOML: {exc}") from None


def write(directory: Path, name: str, digest: str, roles: list[str], mode: int) -> Path:
    """Write agents.d/NAME.toml atomically (temp file, fsync, rename); refuses to replace."""
    directory.mkdir(mode=0o700 if mode & 0o077 == 0 else 0o755, exist_ok=True)
    path = directory / f"{name}.toml"
    tmp = directory / f".{name}.toml.tmp"
    body = (f"# written by `workingagents agents add`; `agents revoke {name}` deletes it\n"
            f"[agents.{name}]\ntoken_sha256 = \"{digest}\"\n"
            f"roles = [{', '.join(_quoted(r) for r in roles)}]\n")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.fchmod(fd, mode)  # whatever the umask
        os.write(fd, body.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)  # unlike rename, fails if NAME.toml appeared meanwhile
    finally:
        tmp.unlink()
    _sync_dir(directory)
    return path


def remove(path: Path) -> None:
    path.unlink()
    _sync_dir(path.parent)


def _quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _sync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
