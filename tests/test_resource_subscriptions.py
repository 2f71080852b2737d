"""Resource subscriptions and runtime list changes through the gateway, with a real SDK
server as the upstream (tests/fixtures/live_upstream.py: over stdio, and over Streamable
HTTP in either era) and agents on TCP and on HTTP (the official SDK client, both eras).

An agent subscribed to a resource hears of its updates until it unsubscribes; an agent
not subscribed hears nothing; the roles' ``resources`` hide a resource from a subscribe as
from a read; an upstream is subscribed once per URI however many agents are; an upstream
that adds a tool at runtime and says so reaches agents as list_changed, and the new tool
is listed and callable."""

from __future__ import annotations

import asyncio
import hashlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import orjson
import pytest
from mcp import StdioServerParameters
from mcp.client.client import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.subscriptions import ResourceUpdated

from daemon.client import AgentClient
from daemon.protocol.jsonrpc import RpcError
from tests.conftest import wait_for
from tests.gateway_helpers import TOKENS, listen, tcp_address
from tests.local_servers import Upstream

UPDATED = "notifications/resources/updated"


def config(upstream: Upstream) -> dict[str, dict[str, Any]]:
    def digest(token: str) -> str:
        return hashlib.sha256(token.encode()).hexdigest()
    return {
        "roles.reader": {"tools": ["live__*"], "resources": ["live://status", "live://items/*"]},
        "roles.ops": {"tools": ["*"], "resources": ["*"]},
        "agents.alice": {"token_sha256": digest(TOKENS["alice"]), "roles": ["reader"]},
        "agents.bob": {"token_sha256": digest(TOKENS["bob"]), "roles": ["ops"]},
        "upstreams.live": upstream.table,
    }


@pytest.fixture(params=["stdio", "legacy", "modern"])
def upstream(request: pytest.FixtureRequest, state_dir: Path) -> Iterator[Upstream]:
    served = Upstream(request.param, state_dir / "live.log")
    yield served
    served.stop()


@pytest.fixture
def daemon(start_daemon, upstream):
    d = start_daemon(extra=config(upstream))
    d.wait_ready(timeout=60)
    return d


def tcp(daemon, name: str) -> AgentClient:
    return AgentClient.tcp(*tcp_address(daemon), TOKENS[name], timeout=30)


def next_note(agent: AgentClient, method: str) -> dict[str, Any]:
    """The next notification ``method`` the agent gets (others are kept aside)."""
    while True:
        for note in agent.notifications:
            if note.get("method") == method:
                agent.notifications.remove(note)
                return note
        message = orjson.loads(agent.recv_raw())
        if "id" not in message:
            agent.notifications.append(message)


def updates(agent: AgentClient) -> list[str]:
    return [n["params"]["uri"] for n in agent.notifications if n.get("method") == UPDATED]


def test_a_subscribed_agent_hears_of_updates_until_it_unsubscribes_and_others_hear_nothing(
        daemon, upstream):
    with tcp(daemon, "alice") as alice, tcp(daemon, "bob") as bob:
        assert alice.request("resources/subscribe", {"uri": "live://status"}) == {}
        assert bob.request("resources/subscribe", {"uri": "live://items/b"}) == {}
        bob.call_tool("live__touch", {"uri": "live://status"})
        assert next_note(alice, UPDATED)["params"] == {"uri": "live://status"}
        bob.call_tool("live__touch", {"uri": "live://items/b"})
        # bob's own update comes after alice's would have: he was never sent hers
        assert next_note(bob, UPDATED)["params"] == {"uri": "live://items/b"}
        assert updates(bob) == [] and updates(alice) == []

        assert alice.request("resources/unsubscribe", {"uri": "live://status"}) == {}
        assert alice.request("resources/subscribe", {"uri": "live://items/a"}) == {}
        bob.call_tool("live__touch", {"uri": "live://status"})
        bob.call_tool("live__touch", {"uri": "live://items/a"})
        # updates from one upstream arrive in order: the first she gets is items/a
        assert next_note(alice, UPDATED)["params"] == {"uri": "live://items/a"}
        assert updates(alice) == []
    if upstream.kind == "legacy":  # the handshake era: one upstream request per change
        expected = sorted(["subscribe live://status", "subscribe live://items/b",
                           "unsubscribe live://status", "subscribe live://items/a",
                           "unsubscribe live://items/a", "unsubscribe live://items/b"])
        wait_for(lambda: sorted(upstream.requests()) == expected, 10,
                 "the upstream subscriptions to end with the agents' connections")


@pytest.mark.parametrize("upstream", ["legacy"], indirect=True)  # counted from its
def test_an_upstream_is_subscribed_once_per_uri_however_many_agents_watch_it(  # requests
        daemon, upstream):
    with tcp(daemon, "alice") as alice, tcp(daemon, "bob") as bob:
        alice.request("resources/subscribe", {"uri": "live://status"})
        bob.request("resources/subscribe", {"uri": "live://status"})
        bob.call_tool("live__touch", {"uri": "live://status"})
        assert next_note(alice, UPDATED)["params"]["uri"] == "live://status"
        assert next_note(bob, UPDATED)["params"]["uri"] == "live://status"
        alice.request("resources/unsubscribe", {"uri": "live://status"})
        assert upstream.requests() == ["subscribe live://status"]  # bob still watches it
    wait_for(lambda: upstream.requests() == ["subscribe live://status",
                                             "unsubscribe live://status"],
             10, "the upstream subscription to end with the last agent's connection")


@pytest.mark.parametrize("upstream", ["stdio"], indirect=True)  # the master decides
def test_a_resource_the_roles_hide_answers_subscribe_like_an_unknown_one(daemon):
    with AgentClient.zmq(listen(daemon)["zmq"], TOKENS["alice"], timeout=30) as alice:
        errors = []
        for uri in ("live://secret", "live://nothing-here"):
            with pytest.raises(RpcError) as caught:
                alice.request("resources/subscribe", {"uri": uri})
            errors.append((caught.value.code, caught.value.message, caught.value.data))
        assert errors == [(-32002, "Resource not found", {"uri": "live://secret"}),
                          (-32002, "Resource not found", {"uri": "live://nothing-here"})]
        with pytest.raises(RpcError) as caught:
            alice.request("resources/subscribe", {"uri": 7})
        assert caught.value.code == -32602
    with AgentClient.tcp(*tcp_address(daemon), TOKENS["alice"], stateless=True) as later:
        with pytest.raises(RpcError) as caught:  # 2026-07-28 has subscriptions/listen
            later.request("resources/subscribe", {"uri": "live://status"})
        assert caught.value.code == -32601 and "subscriptions/listen" in caught.value.message
    with AgentClient.zmq(listen(daemon)["zmq"], TOKENS["alice"], timeout=30) as alice:
        assert alice.request("resources/subscribe", {"uri": "live://items/x"}) == {}
        with tcp(daemon, "bob") as bob:
            bob.call_tool("live__touch", {"uri": "live://items/x"})
        assert next_note(alice, UPDATED)["params"] == {"uri": "live://items/x"}  # on ZeroMQ


def test_tools_an_upstream_adds_at_runtime_reach_agents_as_list_changed(daemon):
    names = [f"fresh{i}" for i in range(5)]
    with tcp(daemon, "bob") as bob:
        assert "live__fresh0" not in {t["name"] for t in bob.list_tools()}
        assert bob.call_tool("live__add_tools", {"names": names})["isError"] is False
        next_note(bob, "notifications/tools/list_changed")
        wait_for(lambda: {f"live__{n}" for n in names} <= {t["name"] for t in
                                                           bob.list_tools()},
                 10, "the new tools to be listed")
        result = bob.call_tool("live__fresh3", {})
        assert result["content"][0]["text"] == "I am fresh3"
    # five changes in a burst: listed again fewer times than that
    assert 1 <= daemon.log().count("live: its lists changed") < len(names)


@pytest.mark.parametrize("upstream", ["stdio"], indirect=True)  # any kind alike
def test_subscriptions_are_made_again_after_the_upstream_restarts(daemon, upstream):
    with tcp(daemon, "alice") as alice, tcp(daemon, "bob") as bob:
        alice.request("resources/subscribe", {"uri": "live://status"})
        assert daemon.cli("restart", "upstream:live").returncode == 0
        wait_for(lambda: daemon.status()["upstreams"]["live"]["state"] == "up", 30,
                 "the upstream to come back")

        def touched() -> bool:
            bob.call_tool("live__touch", {"uri": "live://status"})
            return True
        wait_for(touched, 30, "a call to the restarted upstream")
        assert next_note(alice, UPDATED)["params"] == {"uri": "live://status"}


@pytest.mark.parametrize("upstream", ["legacy", "modern"], indirect=True)
def test_subscriptions_are_made_again_when_an_http_upstream_comes_back(daemon, upstream):
    with AgentClient.zmq(listen(daemon)["zmq"], TOKENS["alice"], timeout=30) as alice, \
            tcp(daemon, "bob") as bob:
        alice.request("resources/subscribe", {"uri": "live://status"})
        upstream.stop()
        upstream.start()  # the same URL: the gateway finds it again (a new session)

        def heard() -> bool:
            try:
                bob.call_tool("live__touch", {"uri": "live://status"})
            except RpcError:
                return False  # it is still coming back
            alice.timeout = 1.0  # (ZeroMQ: a receive that times out leaves it usable)
            try:
                return next_note(alice, UPDATED)["params"] == {"uri": "live://status"}
            except TimeoutError:
                return False
            finally:
                alice.timeout = 30.0
        wait_for(heard, 60, "an update of the resource after the upstream came back")


def sdk(daemon, mode: str, token: str, **kwargs: Any) -> Client:
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"},
                              timeout=httpx2.Timeout(30.0))
    return Client(streamable_http_client(f"http://{listen(daemon)['http']}/mcp",
                                         http_client=http), mode=mode, cache=None, **kwargs)


def updates_heard() -> tuple[asyncio.Queue[str], Any]:
    """The URIs of the updates an SDK client hears, and its message handler."""
    heard: asyncio.Queue[str] = asyncio.Queue()

    async def on_message(message: Any) -> None:
        root = getattr(message, "root", message)
        if getattr(root, "method", None) == UPDATED:
            await heard.put(str(root.params.uri))
    return heard, on_message


@pytest.mark.parametrize("upstream", ["stdio", "modern"], indirect=True)
def test_the_sdk_client_over_http_in_the_handshake_era_subscribes_and_unsubscribes(daemon):
    async def run() -> None:
        heard, on_message = updates_heard()
        async with sdk(daemon, "legacy", TOKENS["alice"], message_handler=on_message) as alice, \
                sdk(daemon, "legacy", TOKENS["bob"]) as bob:
            caps = alice.server_capabilities
            assert caps.resources is not None and caps.resources.subscribe is True
            await alice.subscribe_resource("live://status")

            async def touched_until_heard(uri: str) -> None:
                """Updates go to the session's GET stream, which the SDK opens on its
                own time after the handshake: touch until one is heard."""
                for _ in range(20):
                    await bob.call_tool("live__touch", {"uri": uri})
                    try:
                        while await asyncio.wait_for(heard.get(), 1.0) != uri:
                            pass
                        return
                    except TimeoutError:
                        continue
                raise AssertionError(f"no update of {uri} reached the agent")
            await touched_until_heard("live://status")
            await alice.unsubscribe_resource("live://status")
            await alice.subscribe_resource("live://items/z")
            await touched_until_heard("live://items/z")  # whatever came before, came
            await bob.call_tool("live__touch", {"uri": "live://status"})
            await bob.call_tool("live__touch", {"uri": "live://items/z"})
            assert await asyncio.wait_for(heard.get(), 10) == "live://items/z"
            with pytest.raises(Exception, match="Resource not found"):
                await alice.subscribe_resource("live://secret")
    asyncio.run(run())


@pytest.mark.parametrize("upstream", ["stdio", "modern"], indirect=True)
def test_the_sdk_client_over_http_in_2026_listens_to_resource_updates(daemon):
    async def run() -> None:
        async with sdk(daemon, "2026-07-28", TOKENS["alice"]) as alice, \
                sdk(daemon, "2026-07-28", TOKENS["bob"]) as bob, \
                alice.listen(resource_subscriptions=["live://status", "live://secret"],
                             tools_list_changed=True) as stream:
            # the hidden resource is left out of the acknowledgement
            assert stream.honored.resource_subscriptions == ["live://status"]
            await bob.call_tool("live__touch", {"uri": "live://status"})
            event = await asyncio.wait_for(stream.__anext__(), 10)
            assert event == ResourceUpdated(uri="live://status")
    asyncio.run(run())


@pytest.mark.parametrize("upstream", ["stdio"], indirect=True)
def test_the_sdk_client_through_the_bridge_hears_updates_across_a_daemon_restart(
        start_daemon, daemon, upstream):
    bridge = StdioServerParameters(
        command=sys.executable, args=["-m", "daemon", "mcp-bridge", "--config",
                                      str(daemon.config)],
        env={**os.environ, "WORKINGAGENTS_TOKEN": TOKENS["alice"]})

    async def run() -> None:
        heard, on_message = updates_heard()
        async with Client(bridge, mode="legacy", message_handler=on_message) as alice:
            await alice.subscribe_resource("live://items/q")
            await alice.call_tool("live__touch", {"uri": "live://items/q"})
            assert await asyncio.wait_for(heard.get(), 10) == "live://items/q"
            daemon.stop()  # the bridge reconnects to the next daemon, and subscribes again
            again = await asyncio.to_thread(start_daemon, extra=config(upstream))
            await asyncio.to_thread(again.wait_ready, 60)
            await alice.call_tool("live__touch", {"uri": "live://items/q"})
            assert await asyncio.wait_for(heard.get(), 10) == "live://items/q"
    asyncio.run(asyncio.wait_for(run(), 120))
