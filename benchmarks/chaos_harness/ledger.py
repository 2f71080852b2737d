"""Every request the agents sent and every response they got, and a client that records
them all, duplicates included.

``AsyncAgentClient`` hands each response to the future of its id and forgets the id; a
second response to the same id would vanish.  ``RecordingClient`` counts each one as it
arrives, before that, so that the harness can prove "exactly one response per request".
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import time
from dataclasses import dataclass, field
from typing import Any

import orjson

from daemon.client import AsyncAgentClient
from daemon.protocol import mcp


@dataclass
class Request:
    agent: str
    door: str  # "tcp", "zmq", "bridge"
    tool: str
    arguments: dict[str, Any]
    expected: str  # the text of a correct result
    sent: float = field(default_factory=time.monotonic)
    responses: list[dict[str, Any]] = field(default_factory=list)

    @property
    def args_sha256(self) -> str:
        """How the audit log names these arguments (sha256 of their canonical JSON)."""
        return hashlib.sha256(orjson.dumps(self.arguments, option=orjson.OPT_SORT_KEYS)) \
            .hexdigest()

    def verdict(self) -> str:
        """"ok", "wrong", "denied", "tool_error", "error <code>" or "lost"."""
        if not self.responses:
            return "lost"
        first = self.responses[0]
        if "error" in first:
            return f"error {first['error'].get('code')}"
        result = first.get("result") or {}
        if (result.get("_meta") or {}).get(mcp.META_DENIED):
            return "denied"
        if result.get("isError"):
            return "tool_error"
        content = result.get("content") or [{}]
        return "ok" if content[0].get("text") == self.expected else "wrong"


class Ledger:
    def __init__(self) -> None:
        self.requests: list[Request] = []
        self._payloads = itertools.count(1)

    def unique(self) -> int:
        """A number never used before in this run: every call's arguments differ."""
        return next(self._payloads)


class RecordingClient(AsyncAgentClient):
    """An AsyncAgentClient that files every response under its request in the ledger."""

    door = "?"

    def __init__(self, token: str | None, stateless: bool) -> None:
        super().__init__(token, stateless)
        self.filed: dict[int, Request] = {}
        self._bridge: asyncio.subprocess.Process | None = None

    @classmethod
    async def bridge(cls, argv: list[str], env: dict[str, str], token: str,
                     stateless: bool = False) -> RecordingClient:
        """An agent behind ``workingagents mcp-bridge``: JSON-RPC lines on its stdio."""
        self = cls(token, stateless)
        self._bridge = await asyncio.create_subprocess_exec(
            *argv, env={**env, "WORKINGAGENTS_TOKEN": token}, stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, limit=1 << 22)
        assert self._bridge.stdin is not None and self._bridge.stdout is not None
        self._writer = self._bridge.stdin
        self._reader_task = asyncio.create_task(self._read_lines(self._bridge.stdout))
        await self._start()
        return self

    def _deliver(self, raw: bytes) -> None:
        message = orjson.loads(raw)
        if isinstance(message, dict) and "method" not in message:
            filed = self.filed.get(message.get("id"))  # type: ignore[arg-type]
            if filed is not None:
                filed.responses.append(message)
        super()._deliver(raw)

    async def call(self, request: Request, timeout: float) -> None:
        """Send one tools/call; its response(s) land in ``request.responses``."""
        rid, raw = self.build("tools/call", {"name": request.tool,
                                             "arguments": request.arguments})
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[rid] = future
        self.filed[rid] = request
        request.sent = time.monotonic()
        await self.send_raw(raw)
        await asyncio.wait_for(future, timeout)

    async def close(self) -> None:
        await super().close()
        if self._bridge is not None:
            if self._bridge.returncode is None:
                self._bridge.kill()
            await self._bridge.wait()
