"""An upstream's requests back to the client during a call (sampling, elicitation,
roots/list) and its log messages reach the agent that made the call, on that call's
stream, and the agent's answers go back to the upstream (DESIGN.md "HTTP front door": a
client cannot tell the gateway from the server behind it).

The upstream is a real official-SDK server (tests/fixtures/asking_upstream.py), over
stdio and over Streamable HTTP; the agents are raw TCP and ZeroMQ clients, and the
official SDK's Streamable HTTP client with its callbacks."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import mcp_types as types
import pytest
from mcp.client.client import Client
from mcp.client.streamable_http import streamable_http_client

from tests.audit_helpers import audit_dir, calls
from tests.conftest import wait_for
from tests.gateway_helpers import TOKENS, gateway_config, listen
from tests.local_servers import free_port, wait_listening
from tests.security.raw import RawAgent

ASKING = Path(__file__).parent / "fixtures" / "asking_upstream.py"
EVERYTHING = {"sampling": {}, "elicitation": {"form": {}}, "roots": {}}


@pytest.fixture(params=["stdio", "http"])
def daemon(request: pytest.FixtureRequest, start_daemon: Any) -> Iterator[Any]:
    config = gateway_config(tool_timeouts={"ask__sample_patiently": 3.0})
    server = None
    if request.param == "stdio":
        config["upstreams.ask"] = {"command": [sys.executable, str(ASKING)]}
    else:
        port = free_port()
        server = subprocess.Popen([sys.executable, str(ASKING), "--http", str(port)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_listening(server, port, "the HTTP MCP server")
        config["upstreams.ask"] = {"url": f"http://127.0.0.1:{port}/mcp", "timeout": 10.0}
    try:
        # the SDK server starts slowly on a busy machine
        d = start_daemon(extra=config, supervision={"start_timeout": 30.0})
        try:
            d.wait_ready(timeout=60)
        except AssertionError:
            print(d.log()[-6000:])
            raise
        wait_for(lambda: d.status()["upstreams"].get("ask", {}).get("state") == "up", 60,
                 "the asking upstream to be up")
        yield d
    finally:
        if server is not None:
            server.kill()
            server.wait(10)


class Agent(RawAgent):
    """A handshake-era agent on TCP (lines) or ZeroMQ (frames), reading every message."""

    def __init__(self, d: Any, transport: str, capabilities: dict[str, Any]) -> None:
        super().__init__(d, transport)
        assert "result" in self.initialize(TOKENS["bob"], capabilities)

    def tell(self, message: dict[str, Any]) -> None:
        self.send(json.dumps(message).encode())

    def call(self, rid: int, tool: str, arguments: dict[str, Any]) -> None:
        self.tell({"jsonrpc": "2.0", "id": rid, "method": "tools/call",
                   "params": {"name": tool, "arguments": arguments}})


@pytest.mark.parametrize("transport", ["tcp", "zmq"])
def test_an_upstream_asks_the_calling_agent_to_sample_and_gets_its_answer(daemon, transport):
    bob = Agent(daemon, transport, EVERYTHING)
    try:
        bob.call(1, "ask__sample", {"prompt": "what is 2+2?"})
        asked = bob.recv()
        assert asked["method"] == "sampling/createMessage"
        assert asked["params"]["messages"][0]["content"]["text"] == "what is 2+2?"
        bob.tell({"jsonrpc": "2.0", "id": asked["id"], "result": {
            "role": "assistant", "content": {"type": "text", "text": "four"},
            "model": "bob-llm", "stopReason": "endTurn"}})
        answer = bob.recv()
        assert answer["id"] == 1, answer
        assert answer["result"]["content"][0]["text"] == "bob-llm: four"
    finally:
        bob.close()
    records = wait_for(lambda: calls(audit_dir(daemon.state_dir), "ask"), 10,
                       "the ask's audit record")
    assert records[0]["method"] == "sampling/createMessage" and records[0]["agent"] == "bob"
    assert records[0]["upstream"] == "ask" and records[0]["tool"] == "ask__sample"
    assert records[0]["outcome"]["status"] == "ok" and "asked_sha256" in records[0]
    assert "what is 2+2?" not in json.dumps(records[0])  # a digest, not the content


def test_an_agent_without_the_capability_is_not_asked_and_the_upstream_is_refused(daemon):
    bob = Agent(daemon, "tcp", {})
    try:
        bob.call(1, "ask__sample", {"prompt": "hi"})
        answer = bob.recv()
        assert answer["id"] == 1, answer  # no request came before the answer
        text = answer["result"]["content"][0]["text"]
        assert text.startswith("refused: -32601") and "sampling capability" in text
    finally:
        bob.close()


def test_an_agent_that_never_answers_does_not_hold_the_call_forever(daemon):
    bob = Agent(daemon, "tcp", EVERYTHING)
    try:
        started = time.monotonic()
        bob.call(1, "ask__wait_sample", {"prompt": "hello?"})
        assert bob.recv()["method"] == "sampling/createMessage"  # and never answered
        answer = bob.recv()
        assert answer["result"]["content"][0]["text"] == "nobody answered"
        assert time.monotonic() - started < 20
        bob.call(2, "echo", {"still": "serving"})  # the connection is fine
        assert bob.recv()["id"] == 2
    finally:
        bob.close()


def test_a_request_still_unanswered_when_the_call_times_out_is_abandoned(daemon):
    bob = Agent(daemon, "tcp", EVERYTHING)
    try:
        bob.call(1, "ask__sample_patiently", {"prompt": "hello?"})
        assert bob.recv()["method"] == "sampling/createMessage"  # and never answered
        answer = bob.recv()
        assert answer["id"] == 1 and answer["error"]["code"] == -32016  # the call timed out
        bob.call(2, "ask__sample", {"prompt": "again"})  # the next one is asked afresh
        asked = bob.recv()
        bob.tell({"jsonrpc": "2.0", "id": asked["id"], "result": {
            "role": "assistant", "content": {"type": "text", "text": "yes"}, "model": "m"}})
        assert bob.recv()["result"]["content"][0]["text"] == "m: yes"
    finally:
        bob.close()
    abandoned = wait_for(lambda: [r for r in calls(audit_dir(daemon.state_dir), "ask")
                                  if r["outcome"]["status"] == "abandoned"], 10,
                         "the abandoned ask's record")
    assert abandoned[0]["tool"] == "ask__sample_patiently"


def test_a_log_message_during_a_call_reaches_the_calling_agent_first(daemon):
    bob = Agent(daemon, "tcp", {})
    try:
        bob.call(7, "ask__chatty", {})
        seen = [bob.recv() for _ in range(3)]
        logs = [m for m in seen if m.get("method") == "notifications/message"]
        assert [m["params"]["level"] for m in logs] == ["info", "warning"]
        assert logs[0]["params"]["data"] == "hello from upstream"
        assert logs[1]["params"]["logger"] == "ask.tool"
        assert seen[-1]["id"] == 7 and seen[-1]["result"]["content"][0]["text"] == "logged"
    finally:
        bob.close()


def test_the_upstream_asks_for_the_agents_roots_even_on_a_stream_tied_to_no_call(daemon):
    # the SDK sends roots/list without a related request: over HTTP on its GET stream
    bob = Agent(daemon, "tcp", EVERYTHING)
    try:
        bob.call(1, "ask__roots", {})
        asked = bob.recv()
        assert asked["method"] == "roots/list"
        bob.tell({"jsonrpc": "2.0", "id": asked["id"], "result": {
            "roots": [{"uri": "file:///work/project", "name": "project"}]}})
        assert bob.recv()["result"]["content"][0]["text"] == '["file:///work/project"]'
    finally:
        bob.close()


def sdk_client(d: Any, **callbacks: Any) -> Client:
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {TOKENS['bob']}"},
                              timeout=httpx2.Timeout(30.0))
    return Client(streamable_http_client(f"http://{listen(d)['http']}/mcp", http_client=http),
                  mode="legacy", cache=None, **callbacks)


def test_the_python_sdk_over_http_answers_sampling_and_elicitation_and_hears_logs(daemon):
    async def sampling(context: Any, params: types.CreateMessageRequestParams) -> Any:
        asked = params.messages[0].content.text  # type: ignore[union-attr]
        return types.CreateMessageResult(role="assistant", model="sdk-llm",
                                         content=types.TextContent(type="text",
                                                                   text=asked.upper()))

    answers = iter([types.ElicitResult(action="accept", content={"ok": True, "note": "yes"}),
                    types.ElicitResult(action="decline")])

    async def elicitation(context: Any, params: Any) -> types.ElicitResult:
        assert params.message == "Confirm order 7?"
        return next(answers)

    logs: list[Any] = []

    async def logging(params: types.LoggingMessageNotificationParams) -> None:
        logs.append(params)

    async def run() -> None:
        async with sdk_client(daemon, sampling_callback=sampling,
                              elicitation_callback=elicitation,
                              logging_callback=logging) as bob:
            sampled = await bob.call_tool("ask__sample", {"prompt": "shout this"})
            assert sampled.content[0].text == "sdk-llm: SHOUT THIS"  # type: ignore[union-attr]
            accepted = await bob.call_tool("ask__confirm", {"item": "order 7"})
            assert accepted.content[0].text == "accept ok=True note=yes"  # type: ignore[union-attr]
            declined = await bob.call_tool("ask__confirm", {"item": "order 7"})
            assert declined.content[0].text == "decline"  # type: ignore[union-attr]
            logged = await bob.call_tool("ask__chatty", {})
            assert logged.content[0].text == "logged"  # type: ignore[union-attr]
            assert [p.level for p in logs] == ["info", "warning"]
            assert logs[0].data == "hello from upstream"
    asyncio.run(run())


def test_the_python_sdk_without_callbacks_is_not_asked(daemon):
    async def run() -> None:
        async with sdk_client(daemon) as bob:
            refused = await bob.call_tool("ask__sample", {"prompt": "hi"})
            text = refused.content[0].text  # type: ignore[union-attr]
            assert text.startswith("refused: -32601") and "sampling" in text
    asyncio.run(run())


def test_logging_set_level_from_an_agent_reaches_the_upstreams(daemon):
    bob = Agent(daemon, "tcp", {})
    try:
        bob.tell({"jsonrpc": "2.0", "id": 1, "method": "logging/setLevel",
                  "params": {"level": "error"}})
        assert bob.recv() == {"jsonrpc": "2.0", "id": 1, "result": {}}
        bob.call(2, "ask__level", {})
        assert bob.recv()["result"]["content"][0]["text"] == "error"
        bob.tell({"jsonrpc": "2.0", "id": 3, "method": "logging/setLevel",
                  "params": {"level": "loud"}})
        assert bob.recv()["error"]["code"] == -32602
    finally:
        bob.close()


def test_a_2026_07_28_agent_gets_the_logs_it_asked_for_and_is_never_asked(daemon):
    logs: list[Any] = []

    async def logging(params: types.LoggingMessageNotificationParams) -> None:
        logs.append(params.level)

    async def sampling(context: Any, params: Any) -> Any:
        raise AssertionError("a 2026-07-28 client has no server-to-client requests")

    async def run() -> None:
        http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {TOKENS['bob']}"},
                                  timeout=httpx2.Timeout(30.0))
        async with Client(streamable_http_client(f"http://{listen(daemon)['http']}/mcp",
                                                 http_client=http),
                          mode="2026-07-28", cache=None, logging_callback=logging,
                          log_level="warning", sampling_callback=sampling) as bob:
            logged = await bob.call_tool("ask__chatty", {})
            assert logged.content[0].text == "logged"  # type: ignore[union-attr]
            assert logs == ["warning"]  # info is below the level it asked for
            refused = await bob.call_tool("ask__sample", {"prompt": "hi"})
            assert refused.content[0].text.startswith("refused: -32601")  # type: ignore[union-attr]
    asyncio.run(run())


def test_the_sdk_through_the_mcp_bridge_answers_sampling_and_hears_logs(daemon, request):
    if "http" in request.node.callspec.id:
        pytest.skip("one upstream transport is enough for the bridge")
    from tests.test_mcp_bridge import bridge

    async def sampling(context: Any, params: types.CreateMessageRequestParams) -> Any:
        return types.CreateMessageResult(role="assistant", model="ide-llm",
                                         content=types.TextContent(type="text", text="ok"))

    logs: list[str] = []

    async def logging(params: types.LoggingMessageNotificationParams) -> None:
        logs.append(params.level)

    async def run() -> None:
        async with Client(bridge(daemon, TOKENS["bob"]), mode="legacy",
                          sampling_callback=sampling, logging_callback=logging) as ide:
            sampled = await ide.call_tool("ask__sample", {"prompt": "anything"})
            assert sampled.content[0].text == "ide-llm: ok"  # type: ignore[union-attr]
            await ide.call_tool("ask__chatty", {})
            assert logs == ["info", "warning"]
    asyncio.run(run())
