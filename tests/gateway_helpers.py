"""A daemon with two agents and roles, and clients for it."""

from __future__ import annotations

import hashlib
import json
import zlib
from typing import Any

from daemon.client import AgentClient
from tests.conftest import Daemon

TOKENS = {"alice": "alice-secret-token", "bob": "bob-secret-token"}


def gateway_config(**gateway: Any) -> dict[str, dict[str, Any]]:
    return {
        "gateway": gateway,
        "roles.analyst": {"tools": ["echo"]},
        "roles.ops": {"tools": ["*"]},
        "agents.alice": {"token_sha256": hashlib.sha256(TOKENS["alice"].encode()).hexdigest(),
                         "roles": ["analyst"]},
        "agents.bob": {"token_sha256": hashlib.sha256(TOKENS["bob"].encode()).hexdigest(),
                       "roles": ["ops"]},
    }


def listen(daemon: Daemon) -> dict[str, str]:
    info: dict[str, Any] = json.loads((daemon.state_dir / "control.json").read_text())
    return info["listen"]  # type: ignore[no-any-return]


def tcp_address(daemon: Daemon) -> tuple[str, int]:
    host, _, port = listen(daemon)["tcp"].rpartition(":")
    return host, int(port)


def agent(daemon: Daemon, name: str = "bob", transport: str = "tcp", stateless: bool = False,
          timeout: float = 30.0) -> AgentClient:
    token = TOKENS[name]
    if transport == "tcp":
        return AgentClient.tcp(*tcp_address(daemon), token, stateless=stateless,
                               timeout=timeout)
    return AgentClient.zmq(listen(daemon)["zmq"], token, stateless=stateless, timeout=timeout)


def shard(name: str, workers: int = 2) -> str:
    """The gateway worker an agent's calls go to (documented: crc32(name) % workers)."""
    return f"gateway-{zlib.crc32(name.encode()) % workers}"
