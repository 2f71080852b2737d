"""One daemon per security module: agents with narrow roles, two upstreams that write
down every call they receive (tests/security/recording_upstream.py), and clients."""

from __future__ import annotations

import hashlib
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from daemon.client import AgentClient
from tests.conftest import Daemon
from tests.gateway_helpers import TOKENS, gateway_config, listen, tcp_address

RECORDER = Path(__file__).parent / "recording_upstream.py"
# dave may call echo and the notes upstream's read_* tools, nothing else
DAVE = "dave-secret-token-4f1e"
UPSTREAM_TOOLS = {"notes": ["read_note", "add", "secret_tool"],
                  "vault": ["read_note", "secret_tool"]}


def security_config(state_dir: Path, **extra: dict[str, Any]) -> dict[str, dict[str, Any]]:
    sections = gateway_config()
    sections["roles.reader"] = {"tools": ["echo", "notes__read_*"]}
    sections["agents.dave"] = {"token_sha256": hashlib.sha256(DAVE.encode()).hexdigest(),
                               "roles": ["reader"]}
    for name, tools in UPSTREAM_TOOLS.items():
        sections[f"upstreams.{name}"] = {
            "command": [sys.executable, str(RECORDER), str(received_file(state_dir, name)),
                        *tools]}
    sections.update(extra)
    return sections


def received_file(state_dir: Path, upstream: str) -> Path:
    return state_dir / f"{upstream}.received.jsonl"


def received(state_dir: Path, upstream: str) -> list[str]:
    """The raw tools/call lines an upstream received so far."""
    path = received_file(state_dir, upstream)
    return path.read_text().splitlines() if path.exists() else []


def fresh_state_dir() -> Path:
    # Short paths (ipc:// socket paths are limited to 107 bytes).
    return Path(tempfile.mkdtemp(prefix="wa-sec-", dir="/tmp"))


@pytest.fixture(scope="module")
def gateway() -> Iterator[Daemon]:
    """A daemon shared by a module's tests (none of which disturbs the others)."""
    state_dir = fresh_state_dir()
    daemon = Daemon(state_dir, extra=security_config(state_dir))
    try:
        daemon.wait_ready(timeout=60)
        yield daemon
    finally:
        daemon.stop()
        shutil.rmtree(state_dir, ignore_errors=True)


def client(daemon: Daemon, name: str, transport: str = "tcp", stateless: bool = False,
           token: str | None = None) -> AgentClient:
    token = token if token is not None else (DAVE if name == "dave" else TOKENS[name])
    if transport == "tcp":
        return AgentClient.tcp(*tcp_address(daemon), token, stateless=stateless, timeout=30)
    return AgentClient.zmq(listen(daemon)["zmq"], token, stateless=stateless, timeout=30)

