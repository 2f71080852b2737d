"""Governance that cannot be bypassed and leaks nothing: role denials are audited as
denials, guardrails keep secrets out of the audit log, the bundled chain holds large
results within its budget, and Cedar says which policy decided."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import orjson
import pytest

from daemon.protocol.jsonrpc import RpcError
from tests.audit_helpers import audit_dir, calls
from tests.conftest import BUNDLED, CLI, wait_for
from tests.gateway_helpers import agent
from tests.test_bundled_plugins import text
from tests.test_plugins import drop, loaded

SECRET = "sk-proj-" + "A1b2C3d4E5f6G7h8I9j0" * 2


def record_for(d, predicate) -> dict:
    found = wait_for(lambda: [r for r in calls(audit_dir(d.state_dir)) if predicate(r)], 10,
                     "the call's audit record")
    return found[-1]  # type: ignore[no-any-return]


def test_a_tool_the_roles_hide_answers_unknown_and_is_audited_as_a_denial_by_roles(bundled_daemon):
    d, _ = bundled_daemon([])
    with agent(d, "alice") as alice:  # analyst: echo only
        with pytest.raises(RpcError) as err:
            alice.call_tool("sleep", {"seconds": 0})
        assert err.value.code == -32602 and err.value.message == "Unknown tool: sleep"
        with pytest.raises(RpcError) as missing:
            alice.call_tool("no_such_tool", {})
        assert missing.value.message == "Unknown tool: no_such_tool"  # the same answer
    hidden = record_for(d, lambda r: r["tool"] == "sleep")
    assert hidden["outcome"]["status"] == "denied" and hidden["outcome"]["by"] == "roles"
    assert hidden["decisions"][0]["plugin"] == "roles"
    assert "do not allow tool sleep" in hidden["decisions"][0]["reason"]
    assert record_for(d, lambda r: r["tool"] == "no_such_tool")["outcome"]["status"] == "error"
    tail = subprocess.run([*CLI, "audit", "tail", "--denied", "--config", str(d.config)],
                          capture_output=True, text=True, timeout=30)
    assert "alice sleep denied" in tail.stdout and "no_such_tool" not in tail.stdout


@pytest.mark.parametrize("mode", ["block", "redact"])
def test_a_secret_in_the_arguments_never_reaches_the_audit_log(bundled_daemon, mode):
    d, _ = bundled_daemon(["secrets"], secrets={"arguments": mode})
    arguments = {"note": f"use {SECRET} please", "n": 1}
    with agent(d, "bob") as bob:
        result = bob.call_tool("echo", arguments)
    if mode == "block":
        assert result["isError"] and "carry a secret" in text(result)
    else:
        assert result["isError"] is False and SECRET not in text(result)
    record = record_for(d, lambda r: r["tool"] == "echo")
    raw = b"".join(p.read_bytes() for p in audit_dir(d.state_dir).glob("audit-*.jsonl"))
    assert SECRET.encode() not in raw
    assert record["args"] == {"note": "use [secret] please", "n": 1}
    assert record["args_redacted"] is True
    canonical = orjson.dumps(arguments, option=orjson.OPT_SORT_KEYS)
    assert record["args_sha256"] == hashlib.sha256(canonical).hexdigest()  # the original


DENY_RESULTS = '''
from daemon.plugin import Deny, Plugin

class Withhold(Plugin):
    name = "withhold"
    version = 1

    async def after_call(self, call, result):
        return Deny("results of this tool are withheld", "policy")
'''


def test_a_result_denied_after_a_tool_with_effects_ran_says_so_in_the_audit_log(bundled_daemon):
    d, plugin_dir = bundled_daemon([])
    drop(plugin_dir, "withhold", DENY_RESULTS)
    wait_for(lambda: "withhold" in loaded(d), 20, "withhold to load")
    with agent(d, "bob") as bob:
        result = bob.call_tool("sleep", {"seconds": 0})
    assert result["isError"] and "withheld" in text(result)
    record = record_for(d, lambda r: r["tool"] == "sleep")
    assert record["intent"]  # the tool started once its intent was durable ...
    assert record["withheld"]["tool_ran"] is True  # ... ran, and its result was withheld
    assert record["withheld"]["isError"] is False and record["withheld"]["bytes"] > 0
    assert record["outcome"]["status"] == "denied" and record["outcome"]["by"] == "withhold"


@pytest.mark.serial  # the whole chain on 900 KB within the default 50 ms hook budget
def test_the_bundled_chain_passes_results_up_to_the_message_cap(bundled_daemon):
    names = sorted(p.stem for p in BUNDLED.glob("*.py"))
    d, _ = bundled_daemon(names)
    words = " ".join(f"word{i} and 2026 report item {i % 97}" for i in range(30000))
    for size in (100 << 10, 400 << 10, 900 << 10):
        payload = {"text": words[:size]}
        with agent(d, "bob") as bob:
            outcomes = [bob.call_tool("echo", payload) for _ in range(3)]
        for result in outcomes:
            assert result["isError"] is False, (size, text(result)[:200])
            assert json.loads(text(result)) == payload


CEDAR_ONLY_FORBID = '''@id("no-sleep")
forbid(principal, action, resource == Tool::"sleep");
'''


def test_cedar_warns_without_a_permit_and_names_the_policy_that_denied(bundled_daemon, state_dir):
    policies = Path(state_dir) / "policies"
    policies.mkdir()
    (policies / "rules.cedar").write_text("// only a forbid\n" + CEDAR_ONLY_FORBID)
    d, _ = bundled_daemon(["permissions"], permissions={"policies": [str(policies / "*.cedar")]})
    assert "hold no permit" in d.log() and "every call is denied" in d.log()
    with agent(d, "bob") as bob:
        slept = bob.call_tool("sleep", {"seconds": 0})
        echoed = bob.call_tool("echo", {})
    assert f'forbid @id("no-sleep") at {policies / "rules.cedar"}:2' in text(slept)
    assert "no permit matched; Cedar denies by default" in text(echoed)
