"""Standard MCP clients reach the gateway through `workingagents mcp-bridge`: the official
`mcp` SDK's stdio client lists tools and calls one, in both eras, and the
bridge outlives a daemon restart."""

from __future__ import annotations

import asyncio
import os
import sys

import pytest
from mcp import Client, MCPError, StdioServerParameters

from tests.gateway_helpers import TOKENS, gateway_config


def bridge(daemon, token: str | None = None) -> StdioServerParameters:
    env = dict(os.environ)
    if token:
        env["WORKINGAGENTS_TOKEN"] = token
    return StdioServerParameters(command=sys.executable, env=env,
                                 args=["-m", "daemon", "mcp-bridge", "--config",
                                       str(daemon.config)])


@pytest.mark.parametrize("mode, version", [("auto", "2026-07-28"), ("legacy", "2025-11-25")])
def test_the_sdk_client_lists_and_calls_tools_through_the_bridge(start_daemon, mode, version):
    daemon = start_daemon(extra=gateway_config())
    daemon.wait_ready()

    async def run() -> None:
        async with Client(bridge(daemon), mode=mode) as client:
            assert client.protocol_version == version
            assert client.server_info is not None and client.server_info.name == "workingagents"
            listed = await client.list_tools()
            assert [t.name for t in listed.tools] == ["echo", "sleep"]
            result = await client.call_tool("echo", {"text": "via the bridge"})
            assert result.is_error is False
            assert result.content[0].text == '{"text":"via the bridge"}'
    asyncio.run(run())


def test_the_bridge_acts_as_the_agent_named_by_its_token(start_daemon):
    daemon = start_daemon(extra=gateway_config())
    daemon.wait_ready()

    async def run() -> None:
        async with Client(bridge(daemon, TOKENS["alice"]), mode="auto") as client:
            listed = await client.list_tools()
            assert [t.name for t in listed.tools] == ["echo"]
    asyncio.run(run())
    assert TOKENS["alice"] not in daemon.log()


def restarted(start_daemon, daemon):
    """Stop the daemon (the bridge's connection drops), then serve again on the same
    config and state dir: a new port and a new admin token, which the bridge finds."""
    daemon.stop()
    again = start_daemon(extra=gateway_config())
    again.wait_ready()
    return again


@pytest.mark.parametrize("mode", ["auto", "legacy"])
def test_the_bridge_reconnects_when_the_daemon_restarts_and_the_session_goes_on(
        start_daemon, mode):
    daemon = start_daemon(extra=gateway_config())
    daemon.wait_ready()

    async def run() -> None:
        nonlocal daemon
        async with Client(bridge(daemon), mode=mode) as client:
            assert (await client.call_tool("echo", {"n": 1})).content[0].text == '{"n":1}'
            assert daemon.cli("stop").returncode == 0
            daemon.wait_exit(30)
            daemon = await asyncio.to_thread(restarted, start_daemon, daemon)
            result = await client.call_tool("echo", {"n": 2})
            assert result.is_error is False and result.content[0].text == '{"n":2}'
            assert [t.name for t in (await client.list_tools()).tools] == ["echo", "sleep"]
    asyncio.run(asyncio.wait_for(run(), 120))


def test_a_call_in_flight_when_the_daemon_dies_fails_minus_32014_and_a_late_one_waits(
        start_daemon):
    daemon = start_daemon(extra=gateway_config())
    daemon.wait_ready()

    async def run() -> None:
        nonlocal daemon
        params = bridge(daemon)
        params.args += ["--reconnect-deadline", "60"]
        async with Client(params, mode="legacy") as client:
            in_flight = asyncio.create_task(client.call_tool("sleep", {"seconds": 30}))
            await asyncio.sleep(1.0)
            daemon.proc.kill()  # SIGKILL: the connection drops mid-call
            with pytest.raises(MCPError) as err:
                await asyncio.wait_for(in_flight, 30)
            assert err.value.error.code == -32014 and "outcome is unknown" in str(err.value)
            # a call made while the daemon is away waits for it to come back
            late = asyncio.create_task(client.call_tool("echo", {"late": True}))
            await asyncio.sleep(0.5)
            daemon = await asyncio.to_thread(restarted, start_daemon, daemon)
            assert (await asyncio.wait_for(late, 30)).content[0].text == '{"late":true}'
    asyncio.run(asyncio.wait_for(run(), 120))


def test_a_request_answers_a_clear_error_when_the_daemon_stays_away_past_the_deadline(
        start_daemon):
    daemon = start_daemon(extra=gateway_config())
    daemon.wait_ready()

    async def run() -> None:
        params = bridge(daemon)
        params.args += ["--reconnect-deadline", "1"]
        async with Client(params, mode="auto") as client:
            assert daemon.cli("stop").returncode == 0
            daemon.wait_exit(30)
            with pytest.raises(MCPError) as err:
                await asyncio.wait_for(client.call_tool("echo", {}), 30)
            assert err.value.error.code == -32015 and "unreachable" in str(err.value)
    asyncio.run(asyncio.wait_for(run(), 120))
