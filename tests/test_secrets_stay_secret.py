"""Secrets (upstream env, tokens) reach where they are needed and appear nowhere else:
not in a log line, an error, `status` or the audit log.  Upstream secrets come from the
daemon's environment or from $CREDENTIALS_DIRECTORY (systemd LoadCredential=)."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import pytest

from daemon import config
from daemon.client import AgentClient
from daemon.protocol.jsonrpc import RpcError
from tests.audit_helpers import audit_dir
from tests.conftest import wait_for, write_config
from tests.gateway_helpers import gateway_config, tcp_address

FIXTURES = Path(__file__).parent / "fixtures"
ENV_SERVER = [sys.executable, str(FIXTURES / "env_upstream.py")]

FROM_ENVIRONMENT = "wa-FAKE-SECRET-from-environment-7f3c9e"
FROM_CREDENTIAL = "wa-FAKE-SECRET-from-credential-55e0a1"
PLAIN_VALUE = "wa-FAKE-SECRET-in-plain-env-41d2b7"  # a secret put where it does not belong
PLAIN_VALUE_NEW = "wa-FAKE-SECRET-in-plain-env-changed-9c08"
TOKEN = "wa-FAKE-SECRET-agent-token-b81a3f"
WRONG_TOKEN = "wa-FAKE-SECRET-wrong-token-e4417d"
EVERY_SECRET = (FROM_ENVIRONMENT, FROM_CREDENTIAL, PLAIN_VALUE, PLAIN_VALUE_NEW, TOKEN,
                WRONG_TOKEN)


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def leaks(*texts: str) -> list[str]:
    return [s for s in EVERY_SECRET if any(s in t for t in texts)]


def audit_text(state_dir: Path) -> str:
    return "".join(p.read_text() for p in sorted(audit_dir(state_dir).iterdir())
                   if p.is_file())


def with_upstreams(**upstreams: dict[str, object]) -> dict[str, dict[str, object]]:
    sections = gateway_config()
    sections["roles.dev"] = {"tools": ["*"]}
    sections["agents.carol"] = {"token_sha256": sha256(TOKEN), "roles": ["dev"]}
    for name, table in upstreams.items():
        sections[f"upstreams.{name}"] = table
    return sections


def test_a_refused_upstreams_reload_names_the_keys_never_the_values(start_daemon):
    d = start_daemon(extra=with_upstreams(gh={"command": ENV_SERVER,
                                              "env": {"GITHUB_TOKEN": PLAIN_VALUE}}))
    d.wait_ready(timeout=60)
    d.config.write_text(d.config.read_text().replace(PLAIN_VALUE, PLAIN_VALUE_NEW))
    out = d.cli("reload")
    assert out.returncode == 1
    assert "upstreams.gh.env.GITHUB_TOKEN" in out.stderr and "cannot change" in out.stderr
    status = d.cli("status", "--json")
    wait_for(lambda: "reload refused" in d.log(), 10, "the refusal in the log")
    assert leaks(out.stdout, out.stderr, status.stdout, d.log()) == []


def test_secrets_never_appear_in_logs_errors_status_or_the_audit_log(start_daemon, state_dir,
                                                                      tmp_path):
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "GH_APP_KEY").write_text(FROM_CREDENTIAL + "\n")
    secrets = {"GITHUB_TOKEN": "WA_TEST_GITHUB_TOKEN", "APP_KEY": "GH_APP_KEY"}
    d = start_daemon(
        extra=with_upstreams(
            gh={"command": ENV_SERVER, "env": {"PLAIN": "visible"}, "secret_env": secrets},
            broken={"command": [sys.executable, "-c", "import sys; sys.exit(3)"],
                    "secret_env": secrets}),
        supervision={"max_restarts": 1},
        env={"WA_TEST_GITHUB_TOKEN": FROM_ENVIRONMENT, "CREDENTIALS_DIRECTORY": str(credentials)})
    d.wait_ready(timeout=60)
    wait_for(lambda: "not restarted" in d.log(), 30, "the broken upstream to give up")
    outputs = []
    with AgentClient.tcp(*tcp_address(d), TOKEN) as carol:
        digest = {name: carol.call_tool("gh__env_digest", {"name": name})["content"][0]["text"]
                  for name in ("GITHUB_TOKEN", "APP_KEY", "PLAIN")}
        with pytest.raises(RpcError) as down:
            carol.call_tool("broken__anything", {})
        outputs.append(down.value.message)
    assert digest == {"GITHUB_TOKEN": sha256(FROM_ENVIRONMENT),
                      "APP_KEY": sha256(FROM_CREDENTIAL), "PLAIN": sha256("visible")}
    with pytest.raises(RpcError) as refused:
        AgentClient.tcp(*tcp_address(d), WRONG_TOKEN).close()
    assert refused.value.code == -32010
    outputs.append(refused.value.message)
    d.config.write_text(d.config.read_text().replace("GH_APP_KEY", "GH_OTHER_KEY"))
    reload = d.cli("reload")
    assert reload.returncode == 1 and "upstreams.gh.secret_env.APP_KEY" in reload.stderr
    for args in (("status",), ("status", "--json"), ("tools",), ("audit", "tail", "-n", "50")):
        out = d.cli(*args)
        outputs += [out.stdout, out.stderr]
    d.stop()
    outputs += [reload.stdout, reload.stderr]
    assert "did not start" in d.log() and "reload refused" in d.log()
    assert leaks(*outputs, d.log(), audit_text(state_dir)) == []


def test_a_missing_upstream_secret_is_refused_at_start_naming_key_and_variable(start_daemon):
    d = start_daemon(extra=with_upstreams(gh={"command": ENV_SERVER, "secret_env": {
        "GITHUB_TOKEN": "WA_TEST_NEVER_SET"}}), env={"CREDENTIALS_DIRECTORY": "/nonexistent"})
    assert d.wait_exit(30) == 1
    errors = [line for line in d.log().splitlines() if line.strip()]
    assert len(errors) == 1, errors
    assert "key upstreams.gh.secret_env.GITHUB_TOKEN" in errors[0]
    assert "WA_TEST_NEVER_SET is not set" in errors[0]


def test_secret_env_takes_names_only_and_no_variable_twice(tmp_path):
    path = tmp_path / "wa.toml"
    write_config(path, {"upstreams.gh": {"command": ["true"], "secret_env": {
        "GITHUB_TOKEN": "ghp_not a name"}}})
    with pytest.raises(config.ConfigError, match=r"upstreams\.gh\.secret_env\.GITHUB_TOKEN: "
                                                 r"expected the name of an environment"):
        config.load(str(path))
    write_config(path, {"upstreams.gh": {"command": ["true"], "env": {"A": PLAIN_VALUE},
                                         "secret_env": {"A": "A_SECRET"}}})
    with pytest.raises(config.ConfigError, match=r"upstreams\.gh\.env\.A: expected a variable "
                                                 r"set in env or secret_env") as refused:
        config.load(str(path))
    assert PLAIN_VALUE not in str(refused.value)
