"""`workingagents agents add/list/revoke`: tokens minted, registered in agents.d beside
the config file and applied with a reload, so nobody computes a sha256 by hand."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import pytest

from daemon import config
from daemon.client import AgentClient
from daemon.protocol.jsonrpc import RpcError
from tests.audit_helpers import audit_dir
from tests.conftest import CLI, write_config
from tests.gateway_helpers import gateway_config, tcp_address


def cli(config_file: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args, "--config", str(config_file)], capture_output=True,
                          text=True, timeout=60)


def test_an_added_agent_can_call_at_once_and_a_revoked_one_cannot(start_daemon, state_dir):
    d = start_daemon(extra=gateway_config())
    d.wait_ready()
    added = d.cli("agents", "add", "robot", "--role", "analyst")
    assert added.returncode == 0, added.stderr
    token = added.stdout.strip()
    assert len(token) >= 40 and "\n" not in token
    assert "shown this once" in added.stderr and "the daemon reloaded" in added.stderr
    stored = (state_dir / "agents.d" / "robot.toml").read_text()
    assert hashlib.sha256(token.encode()).hexdigest() in stored and token not in stored

    session = AgentClient.tcp(*tcp_address(d), token)  # authenticated once, at initialize
    result = session.call_tool("echo", {"text": "hi"})
    assert result["isError"] is False and '"hi"' in result["content"][0]["text"]
    with pytest.raises(RpcError) as hidden:  # roles apply: analyst may call echo only
        session.call_tool("sleep", {"seconds": 0})
    assert hidden.value.code == -32602

    listed = d.cli("agents", "list")
    assert listed.returncode == 0, listed.stderr
    row = next(line for line in listed.stdout.splitlines() if line.startswith("robot "))
    assert "analyst" in row and str(state_dir / "agents.d" / "robot.toml") in row
    assert hashlib.sha256(token.encode()).hexdigest() not in listed.stdout  # a prefix only

    revoked = d.cli("agents", "revoke", "robot")
    assert revoked.returncode == 0, revoked.stderr
    assert not (state_dir / "agents.d" / "robot.toml").exists()
    with pytest.raises(RpcError) as fresh:
        AgentClient.tcp(*tcp_address(d), token).close()
    assert fresh.value.code == -32010
    with pytest.raises(RpcError) as open_session:  # the open connection loses access too
        session.call_tool("echo", {"text": "again"})
    assert open_session.value.code == -32010
    session.close()
    assert "robot" not in d.cli("agents", "list").stdout
    assert token not in d.log() and token not in "".join(
        p.read_text() for p in audit_dir(state_dir).glob("audit-*.jsonl"))


def test_agents_add_refuses_in_one_line_and_applies_at_start_when_no_daemon_runs(tmp_path):
    path = write_config(tmp_path / "wa.toml", {"daemon": {"state_dir": str(tmp_path)},
                                               **gateway_config()})
    first = cli(path, "agents", "add", "robot", "--role", "analyst", "--role", "ops")
    assert first.returncode == 0, first.stderr
    assert "not running: it applies at start" in first.stderr
    assert config.load(str(path)).config.agents["robot"].roles == ["analyst", "ops"]
    assert os.stat(tmp_path / "agents.d" / "robot.toml").st_mode & 0o022 == 0
    for args, why in (
            (("robot", "--role", "ops"), "agent robot already exists (in "),
            (("alice", "--role", "ops"), f"agent alice already exists (in {path})"),
            (("zed", "--role", "nope"), "unknown role 'nope'"),
            (("../zed", "--role", "ops"), "bad agent name"),
            (("admin", "--role", "ops"), "bad agent name")):
        out = cli(path, "agents", "add", *args)
        assert out.returncode == 1 and out.stderr.count("\n") == 1 and why in out.stderr, \
            (args, out.stderr)
        assert out.stdout == ""  # no token minted
    usage = cli(path, "agents", "add", "zed")
    assert usage.returncode == 2 and "--role" in usage.stderr
    out = cli(path, "agents", "revoke", "alice")
    assert out.returncode == 1 and "defined in the main config" in out.stderr
    out = cli(path, "agents", "revoke", "nobody")
    assert out.returncode == 1 and "no agent named 'nobody'" in out.stderr
    assert cli(path, "agents", "revoke", "robot").returncode == 0
    assert "robot" not in config.load(str(path)).config.agents


def test_agents_d_files_hold_only_agents_each_defined_once(tmp_path):
    path = write_config(tmp_path / "wa.toml", {"daemon": {"state_dir": str(tmp_path)},
                                               **gateway_config()})
    agents_d = tmp_path / "agents.d"
    agents_d.mkdir()
    digest = "ab" * 32
    bad = agents_d / "x.toml"

    def refused(text: str, why: str) -> None:
        bad.write_text(text)
        bad.chmod(0o600)
        with pytest.raises(config.ConfigError) as exc:
            config.load(str(path))
        assert str(exc.value).startswith(str(bad)) and why in str(exc.value), exc.value

    refused('[roles.x]\ntools = ["*"]\n', "unknown field `roles`")
    refused(f'[agents.x]\ntoken_sha256 = "{digest}"\nroles = []\ncolour = "red"\n',
            "unknown field `colour`")
    refused(f'[agents.alice]\ntoken_sha256 = "{digest}"\n', "also defined in")
    (agents_d / "a.toml").write_text(f'[agents.x]\ntoken_sha256 = "{digest}"\n')
    refused(f'[agents.x]\ntoken_sha256 = "{digest}"\n', "also defined in")
    (agents_d / "a.toml").unlink()
    refused(f'[agents.x]\ntoken_sha256 = "{digest}"\nroles = ["gone"]\n',
            "key agents.x.roles: expected roles defined in [roles.*]")
    bad.write_text(f'[agents.x]\ntoken_sha256 = "{digest}"\nroles = ["analyst"]\n')
    bad.chmod(0o666)
    with pytest.raises(config.ConfigError, match="writable by others"):
        config.load(str(path))
    bad.chmod(0o644)
    assert config.load(str(path)).config.agents["x"].roles == ["analyst"]
