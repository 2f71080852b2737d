"""A daemon in front of real A2A agents (tests.fixtures.a2a_peer, made with a2a-sdk), and
the SDK's client as the caller through it."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
from a2a.client import Client, ClientConfig, ClientFactory
from a2a.helpers.proto_helpers import new_text_message
from a2a.types.a2a_pb2 import Role, SendMessageRequest

from tests.conftest import BUNDLED, Daemon, wait_for
from tests.gateway_helpers import TOKENS, gateway_config, listen

ROOT = Path(__file__).resolve().parent.parent


class A2aPeer:
    """A peer agent in its own process (so that a test can kill it mid-stream)."""

    def __init__(self, kind: str = "echo", skills: int = 1, port: int = 0) -> None:
        self.kind, self.skills = kind, skills
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.fixtures.a2a_peer", "--kind", kind,
             "--skills", str(skills), "--port", str(port)],
            cwd=ROOT, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line.startswith("LISTENING"), f"the peer did not start: {line!r}"
        self.port = int(line.split()[1])
        self.url = f"http://127.0.0.1:{self.port}"

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)

    def __enter__(self) -> A2aPeer:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.kill()


def a2a_config(peers: dict[str, A2aPeer], plugin_dir: Path | None = None,
               plugins: dict[str, Any] | None = None, audit: dict[str, Any] | None = None,
               **a2a: Any) -> dict[str, dict[str, Any]]:
    config = gateway_config()
    config["roles.analyst"] = {"tools": ["echo"], "peers": ["echo", "stream"]}
    config["roles.ops"] = {"tools": ["*"], "peers": ["stream"]}
    config["a2a"] = {"card_refresh": 0.5, **a2a}
    for name, peer in peers.items():
        config[f"a2a.peers.{name}"] = {"url": peer.url, "timeout": 10.0}
    if plugin_dir is not None:
        config["plugins"] = {"dirs": [str(plugin_dir)], "budget_ms": 500.0}
        for name, table in (plugins or {}).items():
            config[f"plugins.config.{name}"] = table
    if audit:
        config["audit"] = audit
    return config


def start_a2a_daemon(start_daemon: Any, state_dir: Path, peers: dict[str, A2aPeer],
                     plugins: dict[str, dict[str, Any]] | None = None,
                     audit: dict[str, Any] | None = None, **a2a: Any) -> Daemon:
    """A daemon fronting these peers, once their cards are read (and, if given, these
    bundled plugins are loaded)."""
    plugin_dir = None
    if plugins is not None:
        plugin_dir = state_dir / "plugins"
        plugin_dir.mkdir(mode=0o755, exist_ok=True)
        for name in plugins:
            shutil.copy(BUNDLED / f"{name}.py", plugin_dir / f"{name}.py")
    d: Daemon = start_daemon(extra=a2a_config(peers, plugin_dir, plugins, audit, **a2a))
    d.wait_ready()
    if plugins:
        wait_for(lambda: set(plugins) <= {p["name"] for p in d.status()["plugins"]["loaded"]},
                 30, f"{list(plugins)} to load")
    wait_for(lambda: all((d.status().get("a2a_peers") or {}).get(n, {}).get("available")
                         for n in peers), 20, "the peers' cards")
    return d


def base(daemon: Daemon) -> str:
    return f"http://{listen(daemon)['http']}"


def http_client(agent: str = "alice") -> httpx.AsyncClient:
    return httpx.AsyncClient(headers={"Authorization": f"Bearer {TOKENS[agent]}"},
                             timeout=30)


async def sdk_client(daemon: Daemon, peer: str, agent: str = "alice",
                     streaming: bool = False) -> Client:
    """The official SDK's client, discovering the peer through the gateway."""
    config = ClientConfig(httpx_client=http_client(agent), streaming=streaming)
    return await ClientFactory(config).create_from_url(f"{base(daemon)}/a2a/{peer}")


def message(text: str, task_id: str | None = None,
            context_id: str | None = None) -> SendMessageRequest:
    return SendMessageRequest(message=new_text_message(text, role=Role.ROLE_USER,
                                                       task_id=task_id,
                                                       context_id=context_id))


def rpc(method: str, params: dict[str, Any], rid: Any = 1) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": rid, "method": method, "params": params}
