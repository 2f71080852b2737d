"""Built-in tools, available with no config.  They run inside the gateway worker: no hop.

| tool  | what it does                                                       |
|-------|--------------------------------------------------------------------|
| echo  | returns its arguments as a JSON text result                        |
| sleep | waits `seconds` (at most 3600), then returns; for timeouts, drains |
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson

from daemon.protocol.mcp import text_result
from daemon.tools.registry import Progress, Tool, ToolRegistry


def echo_now(arguments: dict[str, Any]) -> dict[str, Any]:
    return text_result(orjson.dumps(arguments).decode())


async def echo(arguments: dict[str, Any], progress: Progress | None = None) -> dict[str, Any]:
    return echo_now(arguments)


async def sleep(arguments: dict[str, Any], progress: Progress | None = None) -> dict[str, Any]:
    seconds = arguments.get("seconds", 1)
    if not isinstance(seconds, int | float) or isinstance(seconds, bool) \
            or not 0 <= seconds <= 3600:
        return text_result("seconds must be a number from 0 to 3600", is_error=True)
    await asyncio.sleep(seconds)
    return text_result(f"slept {seconds}s")


def register(registry: ToolRegistry) -> None:
    registry.add(Tool("echo", "Returns its arguments as a JSON text result.",
                      {"type": "object", "properties": {"text": {"type": "string"}},
                       "additionalProperties": True}, echo, inline=echo_now))
    registry.add(Tool("sleep", "Waits the given number of seconds, then returns.",
                      {"type": "object", "properties": {
                          "seconds": {"type": "number", "minimum": 0, "maximum": 3600}},
                       "additionalProperties": False}, sleep))
