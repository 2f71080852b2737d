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
from dataclasses import dataclass
from typing import Any

import orjson

from daemon.client import AsyncAgentClient
from daemon.protocol import mcp


@dataclass(slots=True)
class Request:
    """One request (a tools/call, or an LLM or A2A request: ``tool`` "llm" / "a2a") and
    what came back, kept small: a soak files millions of them."""

    agent: str
    door: str  # "tcp", "zmq", "bridge", "http-session", "llm-stream", "a2a", ...
    tool: str
    arguments: dict[str, Any] | None  # dropped once answered
    expected: str  # the text of a correct result; dropped once answered
    digest: bytes = b""  # how the audit log names the arguments: sha256 of canonical JSON
    answers: int = 0
    first: str = "lost"  # the verdict on the first answer
    body: bytes = b""  # an LLM request's body as sent; dropped once answered

    def __post_init__(self) -> None:
        self.digest = hashlib.sha256(orjson.dumps(self.arguments,
                                                  option=orjson.OPT_SORT_KEYS)).digest()

    def answer(self, message: dict[str, Any]) -> None:
        """A JSON-RPC response to this tools/call."""
        self.settle(self._judge(message) if self.answers == 0 else "")

    def settle(self, verdict: str) -> None:
        """An answer, judged ("ok", "wrong", "error <code>", "http <status>", ...)."""
        self.answers += 1
        if self.answers == 1:
            self.first = verdict
            self.arguments, self.expected, self.body = None, "", b""

    def _judge(self, message: dict[str, Any]) -> str:
        """"ok", "wrong", "denied", "tool_error" or "error <code>"."""
        if "error" in message:
            return f"error {message['error'].get('code')}"
        result = message.get("result") or {}
        if (result.get("_meta") or {}).get(mcp.META_DENIED):
            return "denied"
        if result.get("isError"):
            return "tool_error"
        content = result.get("content") or [{}]
        return "ok" if content[0].get("text") == self.expected else "wrong"

    def verdict(self) -> str:
        """The first answer's verdict, or "lost" if none came."""
        return self.first


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
                filed.answer(message)
        super()._deliver(raw)

    async def call(self, request: Request, timeout: float) -> None:
        """Send one tools/call; each answer is filed with ``request.answer``."""
        rid, raw = self.build("tools/call", {"name": request.tool,
                                             "arguments": request.arguments})
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[rid] = future
        self.filed[rid] = request
        await self.send_raw(raw)
        await asyncio.wait_for(future, timeout)

    async def close(self) -> None:
        await super().close()
        if self._bridge is not None:
            if self._bridge.returncode is None:
                self._bridge.kill()
            await self._bridge.wait()
