"""Upstream MCP servers: supervised stdio children whose tools appear as <name>__<tool>.

The main upstream is a real MCP server built on the official SDK (tests/fixtures/
mcp_upstream.py); a hand-written handshake-era server checks the fallback from
server/discover to initialize."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sys
import time
from pathlib import Path

import psutil
import pytest

from daemon.protocol.jsonrpc import RpcError
from tests.conftest import alive, wait_for
from tests.gateway_helpers import agent, gateway_config

FIXTURES = Path(__file__).parent / "fixtures"


def upstreams(**extra: list[str]) -> dict[str, dict[str, object]]:
    servers = {"notes": [sys.executable, str(FIXTURES / "mcp_upstream.py")],
               "old": [sys.executable, str(FIXTURES / "legacy_upstream.py")], **extra}
    config = gateway_config()
    config["roles.reader"] = {"tools": ["notes__read_*"]}
    config["agents.carol"] = {"token_sha256": hashlib.sha256(b"carol-token").hexdigest(),
                              "roles": ["reader"]}
    for name, command in servers.items():
        config[f"upstreams.{name}"] = {"command": command}
    return config


@pytest.fixture
def daemon(start_daemon):
    d = start_daemon(extra=upstreams())
    d.wait_ready(timeout=60)
    return d


def carol(daemon):
    from daemon.client import AgentClient
    from tests.gateway_helpers import tcp_address
    return AgentClient.tcp(*tcp_address(daemon), "carol-token")


def test_upstream_tools_appear_prefixed_sorted_with_their_schemas(daemon):
    with agent(daemon, "bob") as bob:
        tools = {t["name"]: t for t in bob.list_tools()}
        assert list(tools) == sorted(tools)
        assert {"notes__add", "notes__read_note", "notes__slow", "notes__crash", "notes__steps",
                "old__shout", "echo", "sleep"} == set(tools)
        schema = tools["notes__add"]["inputSchema"]
        assert schema["properties"]["a"]["type"] == "integer" and schema["required"] == [
            "a", "b"]
        result = bob.call_tool("notes__add", {"a": 2, "b": 40})
        assert result["isError"] is False and result["content"][0]["text"] == "42"
        assert bob.call_tool("notes__read_note", {"name": "hello"})["content"][0]["text"] \
            == "world"
    with agent(daemon, "bob", "zmq", stateless=True) as modern:
        result = modern.call_tool("notes__add", {"a": 1, "b": 1})
        assert result["resultType"] == "complete" and result["content"][0]["text"] == "2"
    log = daemon.log()
    assert "notes: MCP 2026-07-28, 5 tools" in log, "the SDK server speaks the new era"


def test_a_handshake_era_upstream_is_reached_through_the_initialize_fallback(daemon):
    with agent(daemon, "bob") as bob:
        assert bob.call_tool("old__shout", {"text": "quiet"})["content"][0]["text"] == "QUIET"
    assert "old: MCP 2025-06-18, 1 tools" in daemon.log()


def test_an_upstream_error_stays_a_json_rpc_error(daemon):
    with agent(daemon, "bob") as bob:
        result = bob.call_tool("notes__add", {"a": "not a number", "b": 1})
        assert result["isError"] is True, "the SDK reports bad arguments as a tool error"
        with pytest.raises(RpcError) as err:
            bob.call_tool("old__nope", {})
        assert err.value.code == -32602


def test_roles_apply_to_upstream_tools(daemon):
    with carol(daemon) as c:
        assert [t["name"] for t in c.list_tools()] == ["notes__read_note"]
        with pytest.raises(RpcError) as err:
            c.call_tool("notes__add", {"a": 1, "b": 2})
        assert err.value.code == -32602


def test_a_crashing_upstream_fails_only_the_call_in_flight_and_the_next_call_waits(daemon):
    with agent(daemon, "bob") as bob, agent(daemon, "alice") as alice:
        with pytest.raises(RpcError) as err:
            bob.call_tool("notes__crash", {})
        assert err.value.code == -32015 and "outcome is unknown" in err.value.message
        wait_for(lambda: "upstream notes is restarting" in daemon.log(), 10,
                 "the master to see it go (until then, a call is in flight at it)")
        assert "notes__add" in [t["name"] for t in bob.list_tools()], "still listed"
        # while it restarts: waits for it (see tests/test_upstream_restarts.py)
        assert bob.call_tool("notes__add", {"a": 1, "b": 2})["content"][0]["text"] == "3"
        assert bob.call_tool("old__shout", {"text": "x"})["content"][0]["text"] == "X"
        assert alice.call_tool("echo", {})["isError"] is False
        assert "upstream notes is restarting" in daemon.log()


def test_killing_an_upstream_worker_takes_its_server_along(daemon):
    worker = daemon.workers()["mcp:notes"]
    server = [p.pid for p in psutil.Process(worker["pid"]).children()]
    assert len(server) == 1
    os.kill(worker["pid"], signal.SIGKILL)
    wait_for(lambda: not alive(server[0]), 5, "the MCP server process to go with its worker")
    wait_for(lambda: daemon.workers()["mcp:notes"]["state"] == "ready"
             and daemon.workers()["mcp:notes"]["pid"] != worker["pid"], 30, "a restart")


def test_a_cancelled_upstream_call_is_cancelled_upstream_and_the_link_goes_on(daemon):
    with agent(daemon, "bob", timeout=5) as bob:
        rid, raw = bob.build("tools/call", {"name": "notes__slow", "arguments": {"seconds": 30}})
        bob.send_raw(raw)
        time.sleep(0.3)
        bob.notify("notifications/cancelled", {"requestId": rid})
        assert bob.call_tool("notes__add", {"a": 2, "b": 2})["content"][0]["text"] == "4"


def test_a_broken_upstream_gives_up_alone_and_the_gateway_keeps_serving(start_daemon):
    d = start_daemon(extra=upstreams(broken=[sys.executable, "-c", "import sys; sys.exit(7)"]),
                     supervision={"max_restarts": 2})
    d.wait_ready(timeout=60)
    wait_for(lambda: "upstream:broken" in d.log() and "not restarted" in d.log(), 30,
             "the broken upstream's supervisor to give up")
    tree = d.status()["tree"]
    tools = next(c for c in tree["children"] if c["name"] == "tools")
    broken = next(c for c in tools["children"] if c["name"] == "upstream:broken")
    assert broken["state"] in ("stopped", "starting"), "between probes, or in one"
    assert "restart intensity exceeded" in d.log()
    assert d.proc.poll() is None and d.status()["daemon"]["healthy"]
    with agent(d, "bob") as bob:
        assert bob.call_tool("notes__add", {"a": 1, "b": 1})["content"][0]["text"] == "2"
        with pytest.raises(RpcError) as err:
            bob.call_tool("broken__anything", {})
        assert err.value.code == -32015
    assert "did not start" in d.log()


def test_an_upstream_that_gave_up_can_be_restarted_by_name(start_daemon, state_dir):
    flag = state_dir / "fail"
    flag.touch()
    script = ("import os, sys, runpy; "
              f"sys.exit(5) if os.path.exists({str(flag)!r}) else "
              f"runpy.run_path({str(FIXTURES / 'mcp_upstream.py')!r}, run_name='__main__')")
    d = start_daemon(extra=upstreams(flaky=[sys.executable, "-c", script]),
                     supervision={"max_restarts": 1})
    d.wait_ready(timeout=60)
    wait_for(lambda: "not restarted" in d.log(), 30, "the flaky upstream to give up")
    flag.unlink()
    out = d.cli("restart", "upstream:flaky")
    assert out.returncode == 0, out.stderr
    with agent(d, "bob") as bob:
        wait_for(lambda: "flaky__add" in [t["name"] for t in bob.list_tools()], 30, "tools")
        assert bob.call_tool("flaky__add", {"a": 3, "b": 4})["content"][0]["text"] == "7"
    assert json.loads(json.dumps(d.status()))["daemon"]["healthy"]


@pytest.mark.parametrize("token", ["tok-1", 7])
def test_upstream_progress_reaches_the_agent_under_its_own_token(daemon, token):
    with agent(daemon, "bob") as bob, agent(daemon, "alice") as alice:
        result = bob.request("tools/call", {"name": "notes__steps", "arguments": {"count": 3},
                                            "_meta": {"progressToken": token}})
        assert result["content"][0]["text"] == "3 steps"
        progress = [n["params"] for n in bob.notifications
                    if n["method"] == "notifications/progress"]
        assert [(p["progressToken"], p["progress"], p["total"]) for p in progress] == [
            (token, 1, 3), (token, 2, 3), (token, 3, 3)]
        assert progress[0]["message"] == "step 1"
        assert alice.call_tool("echo", {})["isError"] is False
        assert not [n for n in alice.notifications if n["method"] == "notifications/progress"]


def test_a_bare_upstream_serves_its_tools_by_their_own_names(start_daemon):
    config = upstreams()
    config["upstreams.notes"] = {**config["upstreams.notes"], "prefix": ""}
    d = start_daemon(extra=config)
    d.wait_ready(timeout=60)
    with agent(d, "bob") as bob:
        names = {t["name"] for t in bob.list_tools()}
        assert {"add", "read_note", "steps", "old__shout", "echo"} <= names
        assert not any(name.startswith("notes__") for name in names)
        assert bob.call_tool("add", {"a": 2, "b": 40})["content"][0]["text"] == "42"
        assert bob.call_tool("old__shout", {"text": "x"})["content"][0]["text"] == "X"
        with pytest.raises(RpcError) as err:
            bob.call_tool("no_such_tool", {})
        assert (err.value.code, err.value.message) == (-32602, "Unknown tool: no_such_tool")
