"""Standard MCP clients reach the gateway through `workingagents mcp-bridge`: the official
`mcp` SDK's stdio client lists tools and calls one, in both eras."""

from __future__ import annotations

import asyncio
import os
import sys

import pytest
from mcp import Client, StdioServerParameters

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
