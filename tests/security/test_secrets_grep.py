"""Tokens, upstream secrets and the values a guardrail caught appear nowhere an operator
or an agent can read: not in the daemon's log, `status`, `status --json`, the /metrics
text, the audit files, or any error a client got.  (tests/test_secrets_stay_secret.py
checks upstream secrets through restarts and credentials; this test adds the agents'
tokens, the admin and control tokens, a guardrail's catch and the metrics.)"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import urllib.request
from pathlib import Path

import pytest

from daemon.client import AgentClient
from daemon.protocol.jsonrpc import RpcError
from tests.conftest import wait_for
from tests.gateway_helpers import TOKENS, gateway_config, listen, tcp_address
from tests.security.raw import RawAgent, call

REPO = Path(__file__).resolve().parents[2]
ENV_SERVER = [sys.executable, str(REPO / "tests" / "fixtures" / "env_upstream.py")]
UPSTREAM_SECRET = "wa-FAKE-upstream-secret-0b7d51c2"
CAUGHT = "sk-proj-FAKEabcdefghijklmnopqrstuvwx0123456789"  # what the secrets plugin blocks
CAROL = "wa-FAKE-carol-token-93ce2a"
WRONG = "wa-FAKE-wrong-token-5d1f07"


def files_text(directory: Path) -> str:
    return "".join(p.read_text(errors="replace") for p in sorted(directory.rglob("*"))
                   if p.is_file())


def test_no_token_secret_or_caught_value_appears_in_logs_status_metrics_audit_or_errors(
        start_daemon, state_dir, tmp_path):
    plugin_dir = tmp_path / "plugins"
    plugin_dir.mkdir()
    shutil.copy(REPO / "plugins" / "secrets.py", plugin_dir / "secrets.py")
    sections = gateway_config()
    sections["roles.dev"] = {"tools": ["*"]}
    sections["agents.carol"] = {"token_sha256": hashlib.sha256(CAROL.encode()).hexdigest(),
                                "roles": ["dev"]}
    sections["upstreams.gh"] = {"command": ENV_SERVER,
                                "secret_env": {"GITHUB_TOKEN": "WA_TEST_SECURITY_SECRET"}}
    sections["plugins"] = {"dirs": [str(plugin_dir)]}
    sections["plugins.config.secrets"] = {"arguments": "block"}
    d = start_daemon(extra=sections, env={"WA_TEST_SECURITY_SECRET": UPSTREAM_SECRET})
    d.wait_ready(timeout=60)
    said: list[str] = []  # everything a client was told
    with AgentClient.tcp(*tcp_address(d), CAROL) as carol:
        digest = carol.call_tool("gh__env_digest", {"name": "GITHUB_TOKEN"})
        assert digest["content"][0]["text"] == hashlib.sha256(UPSTREAM_SECRET.encode()).hexdigest()
        blocked = carol.call_tool("echo", {"note": f"my key is {CAUGHT}"})
        assert blocked["isError"] and "Denied by secrets" in blocked["content"][0]["text"]
        said.append(json.dumps(blocked))
        blocked = carol.call_tool("gh__env_digest", {"name": CAUGHT})
        said.append(json.dumps(blocked))
    with AgentClient.tcp(*tcp_address(d), TOKENS["alice"]) as alice:
        with pytest.raises(RpcError) as hidden:
            alice.call_tool("gh__env_digest", {"name": "GITHUB_TOKEN"})
        said.append(hidden.value.message)
    for transport in ("tcp", "zmq"):
        with pytest.raises(RpcError) as refused:
            AgentClient.tcp(*tcp_address(d), WRONG).close() if transport == "tcp" \
                else AgentClient.zmq(listen(d)["zmq"], WRONG, timeout=10).close()
        said.append(refused.value.message)
        with RawAgent(d, transport) as raw:
            said.append(json.dumps(raw.ask(call(1, "echo", {}, token=WRONG))))
            said.append(json.dumps(raw.ask(call(2, "echo", {}, token=TOKENS["bob"] + " "))))
            said.append(json.dumps(raw.ask(call(3, "echo", {"a": CAUGHT}, token=WRONG))))
    d.config.write_text(d.config.read_text().replace("WA_TEST_SECURITY_SECRET",
                                                     "WA_TEST_OTHER_SECRET"))
    reload = d.cli("reload")
    assert reload.returncode == 1 and "upstreams.gh.secret_env.GITHUB_TOKEN" in reload.stderr
    said += [reload.stdout, reload.stderr]
    for args in (("status",), ("status", "--json"), ("tools",), ("audit", "tail", "-n", "50"),
                 ("plugins", "list")):
        out = d.cli(*args)
        said += [out.stdout, out.stderr]
    def scrape() -> str | None:  # the workers' tallies reach the metrics once a second
        with urllib.request.urlopen(f"http://{listen(d)['metrics']}/metrics",
                                    timeout=10) as page:
            text: str = page.read().decode()
        return text if 'agent="carol"' in text else None
    metrics_text = wait_for(scrape, 15, "the metrics to see carol's calls")
    control = json.loads((state_dir / "control.json").read_text())
    admin_token = (state_dir / "admin.token").read_text().strip()
    wait_for(lambda: "reload refused" in d.log(), 10, "the refusal in the log")
    d.stop()
    audit = files_text(state_dir / "audit")
    assert "Denied by secrets" in audit or '"by":"secrets"' in audit
    secrets = {"carol's token": CAROL, "alice's token": TOKENS["alice"],
               "bob's token": TOKENS["bob"], "the wrong token": WRONG,
               "the admin token": admin_token, "the control token": control["token"],
               "the upstream secret": UPSTREAM_SECRET, "the caught key": CAUGHT}
    places = {"the log": d.log(), "the metrics": metrics_text, "the audit files": audit,
              "what clients and the CLI were told": "\n".join(said),
              "the runtime dir": files_text(state_dir / "run") if (state_dir / "run").exists()
              else ""}
    leaks = [f"{secret} in {place}" for secret, value in secrets.items()
             for place, text in places.items() if value in text]
    assert leaks == []
    assert os.stat(state_dir / "admin.token").st_mode & 0o077 == 0
