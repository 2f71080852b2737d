"""Agents on the HTTP front door: MCP over Streamable HTTP (both eras, JSON and SSE
answers), the AI gateway (/v1/chat/completions, streamed and not) and the agent gateway
(/a2a/<peer>: SendMessage and SendStreamingMessage), each on one aiohttp session with
kept-alive connections.

Every answer is filed under its request (``Request.settle``), so the checks are those of
the other doors: one answer each, correct if a success, audited.  A body the client
could not read to its end (a dropped connection) files nothing: the request is lost.
A stream that ends without its terminal event and without an error event is "cut": a
silent truncation, which fails the run.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import random
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson

from benchmarks.chaos_harness.ledger import Ledger, Request
from benchmarks.chaos_harness.services import A2A_ANSWER
from daemon.client import CLIENT_INFO
from daemon.protocol import mcp

MODEL = "gpt-4o-mini"
PEER = "peer"
JSON_OR_SSE = "application/json, text/event-stream"


async def sse_data(response: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
    """The data of each event of an SSE body, as it arrives."""
    data: list[bytes] = []
    async for line in response.content:
        line = line.rstrip(b"\r\n")
        if not line:
            if data:
                yield b"\n".join(data)
                data = []
        elif line.startswith(b"data:"):
            data.append(line[5:].removeprefix(b" "))
    if data:
        yield b"\n".join(data)


class HttpAgent:
    """One agent's kept-alive HTTP session with the daemon."""

    door = "http"

    def __init__(self, base: str, token: str) -> None:
        self.base = base
        self.token = token
        self.http = aiohttp.ClientSession(
            headers={"Authorization": f"Bearer {token}"},
            connector=aiohttp.TCPConnector(limit=64, keepalive_timeout=30),
            timeout=aiohttp.ClientTimeout(total=None))
        self._ids = itertools.count(1)

    async def start(self) -> None:
        """Nothing to set up but for an MCP session."""

    async def close(self) -> None:
        await self.http.close()

    async def call(self, request: Request, timeout: float) -> None:
        """One request; no answer within ``timeout`` (or a connection that broke before
        the answer was read) leaves it unanswered: lost."""
        try:
            await asyncio.wait_for(self._call(request), timeout)
        except (TimeoutError, aiohttp.ClientError, ConnectionError):
            pass
        except (orjson.JSONDecodeError, KeyError, TypeError, IndexError, AttributeError):
            request.settle("garbled")  # an answer that is not what its API says

    async def _call(self, request: Request) -> None:
        raise NotImplementedError


class McpHttpAgent(HttpAgent):
    """POST /mcp: a handshake-era session (Mcp-Session-Id) or 2026-07-28 stateless
    POSTs; odd calls accept JSON or SSE (the daemon answers JSON), even ones only SSE."""

    def __init__(self, base: str, token: str, stateless: bool) -> None:
        super().__init__(base, token)
        self.stateless = stateless
        self.door = "http-stateless" if stateless else "http-session"
        self.headers: dict[str, str] = {}

    async def start(self) -> None:
        if self.stateless:
            self.headers = {"MCP-Protocol-Version": mcp.STATELESS_VERSIONS[-1]}
            return
        init = {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": mcp.LATEST_HANDSHAKE, "capabilities": {},
            "clientInfo": CLIENT_INFO}}
        async with self.http.post(f"{self.base}/mcp", json=init,
                                  headers={"Accept": JSON_OR_SSE}) as response:
            response.raise_for_status()
            session = response.headers["Mcp-Session-Id"]
            await response.read()
        self.headers = {"Mcp-Session-Id": session,
                        "MCP-Protocol-Version": mcp.LATEST_HANDSHAKE}
        async with self.http.post(f"{self.base}/mcp", headers={
                **self.headers, "Accept": JSON_OR_SSE}, json={
                "jsonrpc": "2.0", "method": "notifications/initialized"}) as response:
            response.raise_for_status()

    async def _call(self, request: Request) -> None:
        rid = next(self._ids)
        params: dict[str, Any] = {"name": request.tool, "arguments": request.arguments}
        headers = {**self.headers, "Accept": JSON_OR_SSE if rid % 2 else "text/event-stream",
                   "Content-Type": "application/json"}
        if self.stateless:
            params["_meta"] = mcp.stateless_meta(CLIENT_INFO)
            headers.update({"Mcp-Method": "tools/call", "Mcp-Name": request.tool})
        body = orjson.dumps({"jsonrpc": "2.0", "id": rid, "method": "tools/call",
                             "params": params})
        async with self.http.post(f"{self.base}/mcp", data=body,
                                  headers=headers) as response:
            if response.content_type == "text/event-stream":
                async for data in sse_data(response):
                    self._file(request, rid, orjson.loads(data))
                return
            raw = await response.read()
        try:
            message = orjson.loads(raw)
        except orjson.JSONDecodeError:
            request.settle(f"http {response.status}")
            return
        if isinstance(message, dict) and "jsonrpc" in message:
            self._file(request, rid, message)
        else:
            request.settle(f"http {response.status}")

    @staticmethod
    def _file(request: Request, rid: int, message: Any) -> None:
        if isinstance(message, dict) and "method" not in message:
            if message.get("id") == rid:
                request.answer(message)
            else:
                request.settle("wrong")  # another request's answer


class LlmAgent(HttpAgent):
    """POST /v1/chat/completions, streamed or not (a seeded choice per request)."""

    door = "llm"

    def __init__(self, base: str, token: str, name: str, stream: bool) -> None:
        super().__init__(base, token)
        self.name = name
        self.stream = stream
        self.door = "llm-stream" if stream else "llm"

    def next_request(self, ledger: Ledger, rng: random.Random) -> Request:
        text = f"{self.name} #{ledger.unique()} {rng.getrandbits(32):08x}"
        body = {"model": MODEL, "messages": [{"role": "user", "content": f"say: {text}"}],
                "stream": self.stream}
        raw = orjson.dumps(body)
        request = Request(self.name, self.door, "llm", None, text)
        request.digest = hashlib.sha256(raw).digest()  # the record's request_sha256
        request.body = raw
        return request

    async def _call(self, request: Request) -> None:
        async with self.http.post(f"{self.base}/v1/chat/completions", data=request.body,
                                  headers={"Content-Type": "application/json"}) as response:
            if response.status != 200:
                await response.read()
                request.settle(f"http {response.status}")
            elif response.content_type == "text/event-stream":
                request.settle(await self._stream(response, request.expected))
            else:
                answer = orjson.loads(await response.read())
                text = answer["choices"][0]["message"]["content"]
                request.settle("ok" if text == request.expected else "wrong")

    @staticmethod
    async def _stream(response: aiohttp.ClientResponse, expected: str) -> str:
        text: list[str] = []
        finished = False
        async for data in sse_data(response):
            if data == b"[DONE]":
                if not finished:
                    return "cut"  # [DONE] without a finish_reason
                return "ok" if "".join(text) == expected else "wrong"
            event = orjson.loads(data)
            if "error" in event:
                return f"stream error {event['error'].get('type')}"
            for choice in event.get("choices") or ():
                text.append((choice.get("delta") or {}).get("content") or "")
                finished = finished or choice.get("finish_reason") is not None
        return "cut"  # neither [DONE] nor an error event: a silent truncation


class A2aAgent(HttpAgent):
    """POST /a2a/<peer>: SendMessage, or SendStreamingMessage (SSE)."""

    def __init__(self, base: str, token: str, name: str, stream: bool) -> None:
        super().__init__(base, token)
        self.name = name
        self.stream = stream
        self.door = "a2a-stream" if stream else "a2a"
        self.method = "SendStreamingMessage" if stream else "SendMessage"

    def next_request(self, ledger: Ledger, rng: random.Random) -> Request:
        n = ledger.unique()
        text = f"{self.name} #{n} {rng.getrandbits(32):08x}"
        params = {"message": {"role": "ROLE_USER", "messageId": f"{self.name}-{n}",
                              "parts": [{"text": text}]}}
        return Request(self.name, self.door, "a2a", params, text)  # digest: sorted params

    async def _call(self, request: Request) -> None:
        rid = next(self._ids)
        message = (request.arguments or {})["message"]
        body = orjson.dumps({"jsonrpc": "2.0", "id": rid, "method": self.method,
                             "params": request.arguments})
        async with self.http.post(f"{self.base}/a2a/{PEER}", data=body, headers={
                "Content-Type": "application/json", "A2A-Version": "1.0"}) as response:
            if response.content_type == "text/event-stream":
                request.settle(await self._stream(response, rid, message))
                return
            raw = await response.read()
        try:
            answer = orjson.loads(raw)
        except orjson.JSONDecodeError:
            request.settle(f"http {response.status}")
            return
        if not isinstance(answer, dict) or "jsonrpc" not in answer:
            request.settle(f"http {response.status}")
        elif answer.get("id") != rid:
            request.settle("wrong")
        elif "error" in answer:
            request.settle(f"error {answer['error'].get('code')}")
        else:
            task = (answer.get("result") or {}).get("task") or {}
            ok = (_mine(task, message) and _artifact_text(task.get("artifacts"))
                  == A2A_ANSWER and (task.get("status") or {}).get("state")
                  == "TASK_STATE_COMPLETED")
            request.settle("ok" if ok else "wrong")

    @staticmethod
    async def _stream(response: aiohttp.ClientResponse, rid: int,
                      message: dict[str, Any]) -> str:
        mine, parts = False, []
        async for data in sse_data(response):
            event = orjson.loads(data)
            if event.get("id") != rid:
                return "wrong"
            if "error" in event:
                return f"stream error {event['error'].get('code')}"
            result = event.get("result") or {}
            if "task" in result:
                mine = _mine(result["task"], message)
            elif "artifactUpdate" in result:
                parts.append(_artifact_text([result["artifactUpdate"].get("artifact")]))
            elif "statusUpdate" in result and \
                    result["statusUpdate"]["status"]["state"] == "TASK_STATE_COMPLETED":
                return "ok" if mine and "".join(parts) == A2A_ANSWER else "wrong"
        return "cut"  # no final state, no error event: a silent truncation


def _mine(task: dict[str, Any], message: dict[str, Any]) -> bool:
    """The task answers this message: its history starts with it."""
    history = task.get("history") or [{}]
    return bool(history[0].get("messageId") == message["messageId"]
                and history[0].get("parts") == message["parts"])


def _artifact_text(artifacts: Any) -> str:
    return "".join(p.get("text", "") for a in artifacts or () if isinstance(a, dict)
                   for p in a.get("parts") or ())
