"""POST/GET/DELETE /mcp on the wire: both MCP eras, auth, errors, limits, and the fate
of calls whose client leaves or whose worker dies.  (The official SDKs: test_http_sdk.)"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from typing import Any

import httpx
import pytest

from tests.audit_helpers import audit_dir, calls
from tests.conftest import wait_for
from tests.gateway_helpers import TOKENS, gateway_config, listen, shard
from tests.test_upstream_restarts import flaky_config, kill_the_server
from tests.test_upstreams import upstreams

ACCEPT = "application/json, text/event-stream"
STATELESS = "2026-07-28"


@pytest.fixture
def daemon(start_daemon):
    d = start_daemon(extra=gateway_config())
    d.wait_ready()
    return d


def url(d: Any) -> str:
    return f"http://{listen(d)['http']}/mcp"


def auth(name: str = "bob") -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[name]}"}


def body(method: str, params: dict[str, Any] | None = None, rid: Any = 1) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": rid, "method": method, "params": params or {}}


def stateless(method: str, params: dict[str, Any] | None = None, rid: Any = 1,
              name: str = "bob") -> tuple[dict[str, Any], dict[str, str]]:
    """A 2026-07-28 request and the headers the spec asks for."""
    params = {**(params or {}), "_meta": {"io.modelcontextprotocol/protocolVersion": STATELESS,
                                          "io.modelcontextprotocol/clientCapabilities": {}}}
    headers = {**auth(name), "Accept": ACCEPT, "MCP-Protocol-Version": STATELESS,
               "Mcp-Method": method}
    if method == "tools/call":
        headers["Mcp-Name"] = params["name"]
    return body(method, params, rid), headers


def open_session(d: Any, name: str = "bob", client: Any = httpx) -> dict[str, str]:
    """initialize; the headers of the session's later requests."""
    reply = client.post(url(d), json=body("initialize", {
        "protocolVersion": "2025-11-25", "capabilities": {},
        "clientInfo": {"name": "t", "version": "1"}}), headers={**auth(name), "Accept": ACCEPT},
        timeout=10)
    assert reply.status_code == 200, reply.text
    assert reply.json()["result"]["protocolVersion"] == "2025-11-25"
    headers = {**auth(name), "Accept": ACCEPT, "MCP-Protocol-Version": "2025-11-25",
               "Mcp-Session-Id": reply.headers["Mcp-Session-Id"]}
    assert client.post(url(d), json={"jsonrpc": "2.0", "method": "notifications/initialized"},
                       headers=headers, timeout=10).status_code == 202
    return headers


def test_a_session_lists_and_calls_tools_and_delete_ends_it(daemon):
    headers = open_session(daemon)
    assert len(headers["Mcp-Session-Id"]) >= 32
    listed = httpx.post(url(daemon), json=body("tools/list", rid=2), headers=headers, timeout=10)
    assert listed.status_code == 200 and listed.headers["content-type"].startswith(
        "application/json")
    assert [t["name"] for t in listed.json()["result"]["tools"]] == ["echo", "sleep"]
    called = httpx.post(url(daemon), json=body("tools/call", {
        "name": "echo", "arguments": {"text": "hi"}}, rid=3), headers=headers, timeout=10)
    assert called.json() == {"jsonrpc": "2.0", "id": 3, "result": {
        "content": [{"type": "text", "text": '{"text":"hi"}'}], "isError": False}}
    wait_for(lambda: [c for c in calls(audit_dir(daemon.state_dir))
                      if c.get("agent") == "bob" and c.get("tool") == "echo"], 10,
             "the call's audit record")
    assert httpx.delete(url(daemon), headers=headers, timeout=10).status_code == 204
    gone = httpx.post(url(daemon), json=body("tools/list", rid=4), headers=headers, timeout=10)
    assert gone.status_code == 404 and "initialize a new one" in gone.json()["error"]["message"]


def test_the_handshake_era_needs_a_session_and_an_unknown_one_is_404(daemon):
    missing = httpx.post(url(daemon), json=body("tools/list"),
                         headers={**auth(), "Accept": ACCEPT}, timeout=10)
    assert missing.status_code == 400 and "Mcp-Session-Id" in missing.json()["error"]["message"]
    unknown = httpx.post(url(daemon), json=body("tools/list"), timeout=10,
                         headers={**auth(), "Accept": ACCEPT, "Mcp-Session-Id": "nope"})
    assert unknown.status_code == 404
    # another agent cannot use bob's session, even with a valid token of its own
    headers = open_session(daemon, "bob")
    theirs = httpx.post(url(daemon), json=body("tools/list"), timeout=10,
                        headers={**headers, **auth("alice")})
    assert theirs.status_code == 404


def test_the_session_id_stands_for_the_token_after_a_meta_token_initialize(daemon):
    init = httpx.post(url(daemon), json=body("initialize", {
        "protocolVersion": "2025-06-18", "_meta": {"io.workingagents/token": TOKENS["alice"]}}),
        headers={"Accept": ACCEPT}, timeout=10)
    assert init.status_code == 200
    headers = {"Accept": ACCEPT, "Mcp-Session-Id": init.headers["Mcp-Session-Id"]}
    listed = httpx.post(url(daemon), json=body("tools/list", rid=2), headers=headers, timeout=10)
    assert [t["name"] for t in listed.json()["result"]["tools"]] == ["echo"]  # alice's roles


def test_stateless_requests_list_and_call_and_a_denied_tool_is_unknown(daemon):
    request, headers = stateless("tools/list")
    listed = httpx.post(url(daemon), json=request, headers=headers, timeout=10)
    assert listed.status_code == 200 and "Mcp-Session-Id" not in listed.headers
    assert listed.json()["result"]["resultType"] == "complete"
    request, headers = stateless("tools/call", {"name": "echo", "arguments": {"a": 1}})
    called = httpx.post(url(daemon), json=request, headers=headers, timeout=10).json()
    assert called["result"]["content"][0]["text"] == '{"a":1}'
    request, headers = stateless("tools/call", {"name": "sleep", "arguments": {}}, name="alice")
    hidden = httpx.post(url(daemon), json=request, headers=headers, timeout=10)
    assert hidden.status_code == 400  # -32602 takes the spec's status in 2026-07-28
    assert hidden.json()["error"]["code"] == -32602
    assert "Unknown tool" in hidden.json()["error"]["message"]


def test_stateless_routing_headers_must_match_the_body(daemon):
    request, headers = stateless("tools/call", {"name": "echo", "arguments": {}})
    for change in ({"Mcp-Method": "tools/list"}, {"Mcp-Name": "sleep"},
                   {"MCP-Protocol-Version": "2025-11-25"}):
        reply = httpx.post(url(daemon), json=request, headers={**headers, **change}, timeout=10)
        assert reply.status_code == 400, change
        assert reply.json()["error"]["code"] == -32020, change
    encoded = {**headers, "Mcp-Name": "=?base64?ZWNobw==?="}  # "echo", the spec's encoding
    assert httpx.post(url(daemon), json=request, headers=encoded,
                      timeout=10).json()["result"]["isError"] is False
    request["params"]["_meta"]["io.modelcontextprotocol/protocolVersion"] = "2099-01-01"
    future = httpx.post(url(daemon), json=request, timeout=10,
                        headers={**headers, "MCP-Protocol-Version": "2099-01-01"})
    assert future.status_code == 400 and future.json()["error"]["code"] == -32022


def test_no_token_or_a_wrong_one_is_401_with_www_authenticate(daemon):
    request, headers = stateless("tools/list")
    del headers["Authorization"]
    for extra in ({}, {"Authorization": "Bearer wrong"}):
        reply = httpx.post(url(daemon), json=request, headers={**headers, **extra}, timeout=10)
        assert reply.status_code == 401
        assert reply.headers["WWW-Authenticate"].startswith("Bearer")
        assert "Unauthenticated" in reply.json()["error"]["message"]
        assert "wrong" not in daemon.log()
    # the _meta token works in place of the header
    request["params"]["_meta"]["io.workingagents/token"] = TOKENS["bob"]
    assert httpx.post(url(daemon), json=request, headers=headers, timeout=10).status_code == 200


def test_bad_input_gets_clear_errors_and_the_server_keeps_serving(daemon):
    headers = {**auth(), "Accept": ACCEPT}
    parse = httpx.post(url(daemon), content=b"{not json", timeout=10,
                       headers={**headers, "Content-Type": "application/json"})
    assert parse.status_code == 400 and parse.json()["error"]["code"] == -32700
    media = httpx.post(url(daemon), content=b"{}", timeout=10,
                       headers={**headers, "Content-Type": "text/plain"})
    assert media.status_code == 415 and "application/json" in media.json()["error"]["message"]
    big = httpx.post(url(daemon), content=b'{"x": "' + b"a" * (2 << 20) + b'"}', timeout=10,
                     headers={**headers, "Content-Type": "application/json"})
    assert big.status_code == 413 and "max_message_bytes" in big.json()["error"]["message"]
    origin = httpx.post(url(daemon), json=body("tools/list"), timeout=10,
                        headers={**headers, "Origin": "http://evil.example"})
    assert origin.status_code == 403
    batch = httpx.post(url(daemon), json=[body("ping")], headers=headers, timeout=10)
    assert batch.status_code == 400 and batch.json()["error"]["code"] == -32600
    request, headers = stateless("tools/list")
    assert httpx.post(url(daemon), json=request, headers=headers, timeout=10).status_code == 200


def test_progress_streams_as_sse_events_before_the_answer(start_daemon):
    d = start_daemon(extra={**gateway_config(), **upstreams()})
    d.wait_ready(timeout=60)
    request, headers = stateless("tools/call", {"name": "notes__steps", "arguments": {
        "count": 3}})
    request["params"]["_meta"]["progressToken"] = "tok"
    with httpx.stream("POST", url(d), json=request, headers=headers, timeout=30) as reply:
        assert reply.headers["content-type"].startswith("text/event-stream")
        events = [json.loads(line[5:]) for line in reply.iter_lines()
                  if line.startswith("data:")]
    assert [e["params"]["progress"] for e in events[:-1]] == [1, 2, 3]
    assert {e["params"]["progressToken"] for e in events[:-1]} == {"tok"}
    assert events[-1]["result"]["content"][0]["text"] == "3 steps"
    # a client that accepts only JSON gets the answer alone
    only_json = httpx.post(url(d), json=request, timeout=30,
                           headers={**headers, "Accept": "application/json"})
    assert only_json.headers["content-type"].startswith("application/json")
    assert only_json.json()["result"]["content"][0]["text"] == "3 steps"


def test_the_get_stream_carries_list_changed_notifications(start_daemon, state_dir):
    d = start_daemon(extra=flaky_config(state_dir), supervision={"max_restarts": 1})
    d.wait_ready(timeout=60)
    headers = open_session(d)
    lines: list[str] = []
    opened = threading.Event()

    def read() -> None:
        with httpx.stream("GET", url(d), headers=headers, timeout=60) as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")
            opened.set()
            for line in stream.iter_lines():
                lines.append(line)
                if "list_changed" in line:
                    return

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    assert opened.wait(10)
    (state_dir / "fail").touch()  # the upstream gives up: its tools leave the list
    kill_the_server(d)
    reader.join(45)
    assert any("notifications/tools/list_changed" in line for line in lines), lines
    bare = httpx.get(url(d), headers={**auth(), "Accept": "text/event-stream"}, timeout=10)
    assert bare.status_code == 405  # no session, no stream (test_http_attacks)


def test_a_dropped_request_cancels_its_call(daemon):
    request, headers = stateless("tools/call", {"name": "sleep", "arguments": {"seconds": 30}})
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(url(daemon), json=request, headers=headers, timeout=1.0)
    wait_for(lambda: [c for c in calls(audit_dir(daemon.state_dir)) if c.get("tool") == "sleep"
                      and c["outcome"] == {"status": "cancelled"}], 10, "the call's record")


def test_http_calls_pending_while_the_gateway_worker_is_killed_are_answered(daemon):
    """A call that reached its tool gets -32014; one that had not is re-routed."""
    victim = daemon.pids()[shard("bob")]
    results: dict[str, Any] = {}

    def post(key: str, request: dict[str, Any], headers: dict[str, str]) -> None:
        results[key] = httpx.post(url(daemon), json=request, headers=headers, timeout=30)

    slow = threading.Thread(target=post, args=("slow", *stateless(
        "tools/call", {"name": "sleep", "arguments": {"seconds": 30}})))
    slow.start()
    time.sleep(0.5)
    os.kill(victim, signal.SIGSTOP)  # the next call waits, unread, in its queue
    waiting = threading.Thread(target=post, args=("waiting", *stateless(
        "tools/call", {"name": "echo", "arguments": {"after": "restart"}}, rid=2)))
    waiting.start()
    time.sleep(0.3)
    os.kill(victim, signal.SIGKILL)
    slow.join(20)
    waiting.join(20)
    assert results["slow"].json()["error"]["code"] == -32014
    assert results["waiting"].json()["result"]["content"][0]["text"] == '{"after":"restart"}'
    wait_for(lambda: daemon.pids().get(shard("bob")) not in (None, victim), 10, "restart")
    request, headers = stateless("tools/list", rid=3)
    assert httpx.post(url(daemon), json=request, headers=headers, timeout=10).status_code == 200


def test_the_in_flight_cap_applies_per_session(start_daemon):
    d = start_daemon(extra={**gateway_config(), "listen": {
        "tcp": "127.0.0.1:0", "zmq": "tcp://127.0.0.1:*", "max_inflight_per_connection": 2}})
    d.wait_ready()
    with httpx.Client(timeout=30) as client:
        headers = open_session(d, client=client)
        threads = [threading.Thread(target=client.post, args=(url(d),), kwargs={
            "json": body("tools/call", {"name": "sleep", "arguments": {"seconds": 2}}, rid=i),
            "headers": headers}) for i in (10, 11)]
        for t in threads:
            t.start()
        time.sleep(0.7)
        busy = client.post(url(d), json=body("tools/call", {"name": "echo", "arguments": {}},
                                             rid=12), headers=headers)
        assert busy.json()["error"]["code"] == -32013
        for t in threads:
            t.join(10)
        # another session of the same agent has its own allowance
        other = open_session(d, client=client)
        assert client.post(url(d), json=body("tools/list", rid=13),
                           headers=other).status_code == 200


def test_an_agent_past_its_session_cap_loses_its_least_recently_active_session(daemon):
    with httpx.Client(timeout=30) as client:
        first = open_session(daemon, client=client)
        later = [client.post(url(daemon), json=body("initialize", {"protocolVersion":
                                                                    "2025-11-25"}),
                             headers={**auth(), "Accept": ACCEPT}) for _ in range(1024)]
        assert {r.status_code for r in later} == {200}
        gone = client.post(url(daemon), json=body("tools/list"), headers=first)
        assert gone.status_code == 404
        newest = {**first, "Mcp-Session-Id": later[-1].headers["Mcp-Session-Id"]}
        assert client.post(url(daemon), json=body("tools/list"),
                           headers=newest).status_code == 200
        # another agent's sessions are its own
        assert client.post(url(daemon), json=body("tools/list"),
                           headers=open_session(daemon, "alice", client)).status_code == 200
