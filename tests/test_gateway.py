"""Agents calling tools through the gateway: both transports, both MCP eras, roles,
pipelining, and the fate of every call (timeouts, cancels, crashes, backpressure)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import time

import pytest

from daemon.client import AgentClient, AsyncAgentClient
from daemon.protocol.jsonrpc import RpcError
from tests.audit_helpers import calls
from tests.conftest import CLI, wait_for
from tests.gateway_helpers import TOKENS, agent, gateway_config, shard, tcp_address


@pytest.fixture
def gateway(start_daemon):
    def start(**gateway):
        daemon = start_daemon(extra=gateway_config(**gateway))
        daemon.wait_ready()
        return daemon
    return start


@pytest.mark.parametrize("transport", ["tcp", "zmq"])
@pytest.mark.parametrize("stateless", [False, True])
def test_an_agent_lists_and_calls_tools_over_each_transport_and_era(gateway, transport,
                                                                     stateless):
    daemon = gateway()
    with agent(daemon, "bob", transport, stateless) as bob:
        listed = bob.request("tools/list")
        assert [t["name"] for t in listed["tools"]] == ["echo", "sleep"]
        assert all("inputSchema" in t and t["description"] for t in listed["tools"])
        result = bob.call_tool("echo", {"text": "hi", "n": [1, 2]})
        assert result["content"] == [{"type": "text", "text": '{"text":"hi","n":[1,2]}'}]
        assert result["isError"] is False
        if stateless:
            assert listed["resultType"] == "complete" and listed["cacheScope"] == "private"
            assert listed["ttlMs"] > 0 and result["resultType"] == "complete"
        else:
            assert "resultType" not in listed and "resultType" not in result


def test_handshake_negotiates_the_version_and_discover_describes_both_eras(gateway):
    daemon = gateway()
    with agent(daemon, "bob") as bob:
        init = bob.request("initialize", {"protocolVersion": "2024-11-05", "capabilities": {},
                                          "clientInfo": {"name": "t", "version": "1"},
                                          "_meta": {"io.workingagents/token": TOKENS["bob"]}})
        assert init["protocolVersion"] == "2024-11-05"
        assert init["capabilities"]["tools"] == {"listChanged": True}
        assert init["serverInfo"]["name"] == "workingagents"
        newer = bob.request("initialize", {"protocolVersion": "2099-01-01", "_meta": {
            "io.workingagents/token": TOKENS["bob"]}})
        assert newer["protocolVersion"] == "2025-11-25"
        assert bob.request("ping") == {}
        found = bob.request("server/discover")
        assert "2026-07-28" in found["supportedVersions"]
        assert "2025-11-25" in found["supportedVersions"]
        assert found["resultType"] == "complete" and found["ttlMs"] >= 0
        assert found["_meta"]["io.modelcontextprotocol/serverInfo"]["name"] == "workingagents"


def test_stateless_requests_are_checked_for_version_and_capabilities(gateway):
    daemon = gateway()
    with agent(daemon, "bob", stateless=True) as bob:
        meta = {"io.modelcontextprotocol/protocolVersion": "2031-01-01",
                "io.modelcontextprotocol/clientCapabilities": {}}
        with pytest.raises(RpcError) as err:
            bob.request("tools/list", {"_meta": meta})
        assert err.value.code == -32022
        assert err.value.data == {"supported": ["2024-11-05", "2025-03-26", "2025-06-18",
                                                "2025-11-25", "2026-07-28"],
                                  "requested": "2031-01-01"}
        bob.send_raw(json.dumps({"jsonrpc": "2.0", "id": "x", "method": "tools/list",
                                 "params": {"_meta": {
                                     "io.modelcontextprotocol/protocolVersion": "2026-07-28",
                                     "io.workingagents/token": TOKENS["bob"]}}}).encode())
        reply = json.loads(bob.recv_raw())
        assert reply["id"] == "x" and reply["error"]["code"] == -32602
        assert "clientCapabilities" in reply["error"]["message"]


def test_without_a_valid_token_nothing_but_discovery_answers(gateway):
    daemon = gateway()
    with AgentClient.tcp(*tcp_address(daemon), None, stateless=True) as anon:
        assert anon.request("server/discover")["supportedVersions"]
        for method in ("tools/list", "tools/call"):
            with pytest.raises(RpcError) as err:
                anon.request(method, {"name": "echo"})
            assert err.value.code == -32010
    with pytest.raises(RpcError) as err:
        AgentClient.tcp(*tcp_address(daemon), "not-a-token")
    assert err.value.code == -32010
    for secret in TOKENS.values():
        assert secret not in daemon.log(), "tokens are never logged"


def test_roles_decide_what_an_agent_sees_and_a_hidden_tool_looks_missing(gateway):
    daemon = gateway()
    with agent(daemon, "alice") as alice:
        assert [t["name"] for t in alice.list_tools()] == ["echo"]
        assert alice.call_tool("echo", {"a": 1})["isError"] is False
        errors = []
        for name in ("sleep", "no_such_tool"):
            with pytest.raises(RpcError) as err:
                alice.call_tool(name, {"seconds": 0})
            errors.append((err.value.code, err.value.message.replace(name, "X")))
        assert errors[0] == errors[1] == (-32602, "Unknown tool: X")


def test_many_pipelined_calls_are_all_answered_and_matched_by_id(gateway):
    daemon = gateway()

    async def run(transport: str) -> None:
        host, port = tcp_address(daemon)
        from tests.gateway_helpers import listen
        client = await (AsyncAgentClient.tcp(host, port, TOKENS["bob"]) if transport == "tcp"
                        else AsyncAgentClient.zmq(listen(daemon)["zmq"], TOKENS["bob"]))
        async with client:
            results = await asyncio.gather(*(client.call_tool("echo", {"i": i})
                                             for i in range(200)))
        assert [r["content"][0]["text"] for r in results] == [f'{{"i":{i}}}'
                                                              for i in range(200)]
    asyncio.run(run("tcp"))
    asyncio.run(run("zmq"))


def test_a_slow_call_does_not_hold_up_fast_ones_on_the_same_connection(gateway):
    daemon = gateway()
    with agent(daemon, "bob") as bob:
        _, slow = bob.build("tools/call", {"name": "sleep", "arguments": {"seconds": 1.5}})
        bob.send_raw(slow)
        started = time.monotonic()
        assert bob.call_tool("echo", {"x": 1})["isError"] is False
        assert time.monotonic() - started < 1.0


def test_per_tool_timeout_answers_minus_32016(gateway):
    daemon = gateway(tool_timeouts={"sleep": 0.3})
    with agent(daemon, "bob") as bob:
        started = time.monotonic()
        with pytest.raises(RpcError) as err:
            bob.call_tool("sleep", {"seconds": 5})
        assert err.value.code == -32016 and "0.3s" in err.value.message
        assert time.monotonic() - started < 3
        assert bob.call_tool("echo", {})["isError"] is False


def test_a_cancelled_call_gets_no_response_and_the_connection_goes_on(gateway):
    daemon = gateway()
    with agent(daemon, "bob", timeout=3) as bob:
        rid, raw = bob.build("tools/call", {"name": "sleep", "arguments": {"seconds": 30}})
        bob.send_raw(raw)
        bob.notify("notifications/cancelled", {"requestId": rid, "reason": "test"})
        assert bob.call_tool("echo", {"after": "cancel"})["isError"] is False
        with pytest.raises(TimeoutError):
            bob._sock.settimeout(1.0)  # type: ignore[union-attr]
            bob.recv_raw()


def test_a_worker_crash_mid_call_answers_minus_32014_and_service_resumes(gateway):
    daemon = gateway()
    victim = daemon.pids()[shard("bob")]
    with agent(daemon, "bob") as bob, agent(daemon, "alice") as alice:
        rid, raw = bob.build("tools/call", {"name": "sleep", "arguments": {"seconds": 30}})
        bob.send_raw(raw)
        time.sleep(0.3)
        os.kill(victim, signal.SIGKILL)
        with pytest.raises(RpcError) as err:
            bob.outcome(bob._response(rid))
        assert err.value.code == -32014 and "outcome is unknown" in err.value.message
        wait_for(lambda: daemon.pids().get(shard("bob")) not in (None, victim), 10, "restart")
        assert bob.call_tool("echo", {"again": True})["isError"] is False
        assert alice.call_tool("echo", {"me": "too"})["isError"] is False


def test_calls_sent_while_a_worker_restarts_wait_for_it_and_are_answered(gateway):
    daemon = gateway()
    victim = daemon.pids()[shard("bob")]
    with agent(daemon, "bob") as bob:
        os.kill(victim, signal.SIGSTOP)  # hung: liveness replaces it within ~1.5s
        started = time.monotonic()
        assert [t["name"] for t in bob.list_tools()] == ["echo", "sleep"]
        assert bob.call_tool("echo", {"waited": True})["isError"] is False
        assert time.monotonic() - started < 10
    assert daemon.pids()[shard("bob")] != victim


def test_in_flight_cap_per_connection_answers_busy(start_daemon):
    daemon = start_daemon(extra={**gateway_config(), "listen": {
        "tcp": "127.0.0.1:0", "zmq": "tcp://127.0.0.1:*", "max_inflight_per_connection": 3}})
    daemon.wait_ready()
    with agent(daemon, "bob") as bob:
        for _ in range(3):
            bob.send_raw(bob.build("tools/call", {"name": "sleep",
                                                  "arguments": {"seconds": 1}})[1])
        with pytest.raises(RpcError) as err:
            bob.call_tool("echo", {})
        assert err.value.code == -32013 and "retry later" in err.value.message
    with agent(daemon, "alice") as alice:
        assert alice.call_tool("echo", {})["isError"] is False
    # a call turned away is in the audit log too
    wait_for(lambda: [(r["agent"], r["tool"], r["outcome"]["code"])
                      for r in calls(daemon.state_dir / "audit", "refused")]
             == [("bob", "echo", -32013)], 5, "the refused call's record")


def test_an_idle_connection_is_closed_and_others_are_not(start_daemon):
    daemon = start_daemon(extra={**gateway_config(), "listen": {
        "tcp": "127.0.0.1:0", "zmq": "tcp://127.0.0.1:*", "idle_timeout": 0.5}})
    daemon.wait_ready()
    silent = socket.create_connection(tcp_address(daemon))
    silent.settimeout(5)
    with agent(daemon, "bob") as bob:
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            bob.call_tool("echo", {})  # keeps bob busy, so not idle
            time.sleep(0.1)
        assert silent.recv(10) == b"", "the silent connection was closed"
    silent.close()


def test_a_client_that_disconnects_mid_call_disturbs_no_one(gateway):
    daemon = gateway()
    for _ in range(5):
        with agent(daemon, "bob") as quitter:
            quitter.send_raw(quitter.build("tools/call", {"name": "sleep",
                                                          "arguments": {"seconds": 2}})[1])
    with agent(daemon, "bob") as bob:
        assert bob.call_tool("echo", {"still": "here"})["isError"] is False
    assert daemon.status()["daemon"]["healthy"]


def test_reload_changes_what_an_agent_may_see_without_a_restart(gateway):
    daemon = gateway()
    pids = daemon.pids()
    text = daemon.config.read_text()
    daemon.config.write_text(text.replace('tools = ["echo"]', 'tools = ["echo", "sleep"]'))
    out = daemon.cli("reload")
    assert out.returncode == 0 and "agents, roles" in out.stdout
    with agent(daemon, "alice") as alice:
        assert [t["name"] for t in alice.list_tools()] == ["echo", "sleep"]
    assert daemon.pids() == pids


def test_cli_tools_and_call_as_admin_and_as_a_named_agent(gateway):
    daemon = gateway()
    out = daemon.cli("call", "echo", "--json", '{"text":"hi"}')
    assert out.returncode == 0 and out.stdout.strip() == '{"text":"hi"}'
    out = daemon.cli("tools")
    assert out.returncode == 0 and out.stdout.split()[0::1][:1] == ["echo"]
    env = {**os.environ, "WORKINGAGENTS_TOKEN": TOKENS["alice"]}
    out = subprocess.run([*CLI, "call", "sleep", "--config", str(daemon.config)],
                         env=env, capture_output=True, text=True, timeout=30)
    assert out.returncode == 1 and "-32602 Unknown tool: sleep" in out.stderr
    out = daemon.cli("call", "echo", "--json", "[1,2]")
    assert out.returncode == 2


def test_a_call_that_had_not_reached_a_tool_is_rerouted_not_failed(gateway):
    daemon = gateway()
    victim = daemon.pids()[shard("bob")]
    with agent(daemon, "bob") as bob:
        os.kill(victim, signal.SIGSTOP)  # the call below waits, unread, in its queue
        result = bob.call_tool("sleep", {"seconds": 0.1})
        assert result["isError"] is False and result["content"][0]["text"] == "slept 0.1s"
    assert daemon.pids()[shard("bob")] != victim
    assert "hung" in daemon.log()


def test_the_sync_client_pipelines_a_batch_with_call_many(gateway):
    daemon = gateway()
    with agent(daemon, "bob", "zmq") as bob:
        results = bob.call_many([("echo", {"i": i}) for i in range(100)])
    assert [r["content"][0]["text"] for r in results] == [f'{{"i":{i}}}' for i in range(100)]
