"""A fake LLM provider for the AI gateway's bench and tests: a real aiohttp server that
speaks OpenAI's (/v1/chat/completions, /v1/embeddings, /v1/models) and Anthropic's
(/v1/messages) wire formats, streamed or not, in a thread with its own event loop.

The answer is "echo: <last user text>", or exactly what follows "say:" in it, or LEAK
(a secret and an address) when it says "reveal", 1000 characters when it says "long", or
64 MB when it says "huge".  ``mode`` makes it fail: "500", "429", "401", "hang" (never
answers), "garbage" (not JSON).  ``chunk`` and ``delay`` shape streams (characters per
chunk, seconds between chunks).  ``seen`` keeps each request (path, headers, body);
``cancelled`` counts streams whose client went away before the end, ``sent`` the stream
bytes its sockets took.  ``python -m daemon.bench.fake_llm [KEY [PORT]]`` serves one in
its own process and prints its port (the bench's provider; the chaos harness restarts it
on the same port).
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from typing import Any

import orjson
from aiohttp import web


def _last_text(body: dict[str, Any]) -> str:
    for message in reversed(body.get("messages") or []):
        if message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, str):
                return content
            return "".join(p.get("text", "") for p in content or [] if isinstance(p, dict)
                           and p.get("type") == "text")
    return ""


LEAK = "the key is AKIAIOSFODNN7EXAMPLE and you may mail jane.doe@example.com today"


def answer_for(body: dict[str, Any]) -> str:
    text = _last_text(body)
    if "reveal" in text:  # the provider's own answer carries a secret and an address
        return LEAK
    if "long" in text:
        return "word " * 200
    if "huge" in text:  # 64 MB, for backpressure
        return "word " * ((64 << 20) // 5)
    return text.split("say:", 1)[1].strip() if "say:" in text else f"echo: {text}"


class FakeLlm:
    def __init__(self, key: str = "sk-provider-key", models: tuple[str, ...] = (
            "gpt-4o-mini", "gpt-4o", "text-embedding-3-small"), port: int = 0) -> None:
        self.key = key
        self.models = models
        self.mode = "ok"
        self.chunk = 4
        self.delay = 0.0
        self.seen: list[tuple[str, dict[str, str], Any]] = []
        self.cancelled = 0
        self.sent = 0  # bytes of streams written (and the socket took)
        self.port = port  # 0: a free one
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    # -- life --------------------------------------------------------------------------

    def __enter__(self) -> FakeLlm:
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def _run(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self.chat)
        app.router.add_post("/v1/embeddings", self.embeddings)
        app.router.add_post("/v1/messages", self.messages)
        app.router.add_get("/v1/models", self.list_models)
        runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", self.port, backlog=1024)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self._ready.set()
        await self._stop.wait()
        await runner.cleanup()

    # -- shared ------------------------------------------------------------------------

    async def _take(self, request: web.Request) -> tuple[Any, web.Response | None]:
        body = orjson.loads(await request.read()) if request.can_read_body else None
        self.seen.append((request.path, dict(request.headers), body))
        given = request.headers.get("x-api-key") or request.headers.get(
            "Authorization", "").removeprefix("Bearer ")
        if self.mode == "401" or given != self.key:
            return body, web.json_response({"error": {"message": "bad key"}}, status=401)
        if self.mode == "500":
            return body, web.json_response({"error": {"message": "boom"}}, status=500)
        if self.mode == "429":
            return body, web.json_response({"error": {"message": "slow down"}}, status=429,
                                           headers={"retry-after": "0"})
        if self.mode == "hang":
            await asyncio.sleep(3600)
        if self.mode == "garbage":
            return body, web.Response(body=b"<html>oops", content_type="application/json")
        return body, None

    async def _stream(self, request: web.Request, events: list[bytes]) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        try:
            for event in events:
                await response.write(event)
                self.sent += len(event)
                if self.delay:
                    await asyncio.sleep(self.delay)
        except (asyncio.CancelledError, ConnectionError):
            self.cancelled += 1
            raise
        await response.write_eof()
        return response

    def _pieces(self, text: str) -> list[str]:
        return [text[i:i + self.chunk] for i in range(0, len(text), self.chunk)] or [""]

    # -- OpenAI ------------------------------------------------------------------------

    async def list_models(self, request: web.Request) -> web.Response:
        _body, failed = await self._take(request)
        if failed is not None:
            return failed
        return web.json_response({"object": "list", "data": [
            {"id": m, "object": "model", "created": 1, "owned_by": "fake"}
            for m in self.models]})

    async def chat(self, request: web.Request) -> web.StreamResponse:
        body, failed = await self._take(request)
        if failed is not None:
            return failed
        model = body["model"]
        text = answer_for(body)
        prompt = max(1, len(_last_text(body)) // 4)
        usage = {"prompt_tokens": prompt, "completion_tokens": max(1, len(text) // 4)}
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        base = {"id": "chatcmpl-fake", "created": int(time.time()), "model": model}
        if body.get("tools"):
            return await self._tool_call(request, body, base, usage)
        if not body.get("stream"):
            return web.json_response({**base, "object": "chat.completion", "choices": [
                {"index": 0, "message": {"role": "assistant", "content": text},
                 "finish_reason": "stop"}], "usage": usage})
        chunk = {**base, "object": "chat.completion.chunk"}
        events = [b"data: " + orjson.dumps({**chunk, "choices": [
            {"index": 0, "delta": {"role": "assistant", "content": ""},
             "finish_reason": None}]}) + b"\n\n"]
        events += [b"data: " + orjson.dumps({**chunk, "choices": [
            {"index": 0, "delta": {"content": piece}, "finish_reason": None}]}) + b"\n\n"
            for piece in self._pieces(text)]
        events.append(b"data: " + orjson.dumps({**chunk, "choices": [
            {"index": 0, "delta": {}, "finish_reason": "stop"}]}) + b"\n\n")
        if (body.get("stream_options") or {}).get("include_usage"):
            events.append(b"data: " + orjson.dumps({**chunk, "choices": [],
                                                    "usage": usage}) + b"\n\n")
        events.append(b"data: [DONE]\n\n")
        return await self._stream(request, events)

    async def _tool_call(self, request: web.Request, body: dict[str, Any],
                         base: dict[str, Any], usage: dict[str, Any]) -> web.StreamResponse:
        """A call of the first tool; "reveal" puts a secret in its arguments (compact
        JSON, with a long run of text after the key, as arguments often come)."""
        tool = body["tools"][0]["function"]["name"]
        arguments = '{"city": "Paris"}'
        if "reveal" in _last_text(body):
            arguments = orjson.dumps({"city": "Paris", "key": "AKIAIOSFODNN7EXAMPLE",
                                      "note": "x" * 150}).decode()
        call = {"id": "call_1", "type": "function",
                "function": {"name": tool, "arguments": arguments}}
        if not body.get("stream"):
            message = {"role": "assistant", "content": None, "tool_calls": [call]}
            return web.json_response({**base, "object": "chat.completion", "choices": [
                {"index": 0, "message": message, "finish_reason": "tool_calls"}],
                "usage": usage})
        chunk = {**base, "object": "chat.completion.chunk"}

        def event(delta: dict[str, Any], finish: str | None = None) -> bytes:
            return b"data: " + orjson.dumps({**chunk, "choices": [
                {"index": 0, "delta": delta, "finish_reason": finish}]}) + b"\n\n"
        events = [event({"role": "assistant", "content": None, "tool_calls": [
            {"index": 0, **call, "function": {"name": tool, "arguments": ""}}]})]
        events += [event({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]})
                   for piece in self._pieces(arguments)]
        events += [event({}, "tool_calls"), b"data: [DONE]\n\n"]
        return await self._stream(request, events)

    async def embeddings(self, request: web.Request) -> web.Response:
        body, failed = await self._take(request)
        if failed is not None:
            return failed
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        return web.json_response({"object": "list", "model": body["model"], "data": [
            {"object": "embedding", "index": i, "embedding": [float(len(t)), 0.5, -0.5]}
            for i, t in enumerate(inputs)],
            "usage": {"prompt_tokens": sum(len(t) for t in inputs) // 4 + 1,
                      "total_tokens": sum(len(t) for t in inputs) // 4 + 1}})

    # -- Anthropic ---------------------------------------------------------------------

    async def messages(self, request: web.Request) -> web.StreamResponse:
        body, failed = await self._take(request)
        if failed is not None:
            return failed
        text = answer_for(body)
        usage = {"input_tokens": max(1, len(_last_text(body)) // 4),
                 "output_tokens": max(1, len(text) // 4)}
        tool = _anthropic_tool(body)  # the text, then a call of the first tool
        message = {"id": "msg_fake", "type": "message", "role": "assistant",
                   "model": body["model"], "stop_reason": "tool_use" if tool else "end_turn",
                   "stop_sequence": None}
        if not body.get("stream"):
            content = [{"type": "text", "text": text}]
            if tool is not None:
                content.append({**tool[0], "input": orjson.loads(tool[1])})
            return web.json_response({**message, "content": content, "usage": usage})

        def event(name: str, data: dict[str, Any]) -> bytes:
            return f"event: {name}\ndata: ".encode() + orjson.dumps(data) + b"\n\n"
        events = [event("message_start", {"type": "message_start", "message": {
            **message, "content": [], "stop_reason": None,
            "usage": {"input_tokens": usage["input_tokens"], "output_tokens": 1}}}),
            event("content_block_start", {"type": "content_block_start", "index": 0,
                                          "content_block": {"type": "text", "text": ""}})]
        events += [event("content_block_delta", {"type": "content_block_delta", "index": 0,
                                                 "delta": {"type": "text_delta",
                                                           "text": piece}})
                   for piece in self._pieces(text)]
        events.append(event("content_block_stop", {"type": "content_block_stop", "index": 0}))
        if tool is not None:
            events.append(event("content_block_start", {
                "type": "content_block_start", "index": 1,
                "content_block": {**tool[0], "input": {}}}))
            events += [event("content_block_delta", {
                "type": "content_block_delta", "index": 1,
                "delta": {"type": "input_json_delta", "partial_json": piece}})
                for piece in self._pieces(tool[1])]
            events.append(event("content_block_stop", {"type": "content_block_stop",
                                                       "index": 1}))
        events += [event("message_delta", {"type": "message_delta",
                                           "delta": {"stop_reason": message["stop_reason"],
                                                     "stop_sequence": None},
                                           "usage": {"output_tokens": usage["output_tokens"]}}),
                   event("message_stop", {"type": "message_stop"})]
        return await self._stream(request, events)


def _anthropic_tool(body: dict[str, Any]) -> tuple[dict[str, Any], str] | None:
    """(the tool_use block, its input as JSON text) when the request offers tools."""
    tools = body.get("tools")
    if not tools:
        return None
    arguments = {"city": "Paris"}
    if "reveal" in _last_text(body):
        arguments = {"city": "Paris", "key": "AKIAIOSFODNN7EXAMPLE", "note": "x" * 150}
    return ({"type": "tool_use", "id": "toolu_1", "name": tools[0]["name"]},
            orjson.dumps(arguments).decode())


if __name__ == "__main__":  # a provider in a process of its own, until stdin closes
    with FakeLlm(key=sys.argv[1] if len(sys.argv) > 1 else "sk-provider-key",
                 port=int(sys.argv[2]) if len(sys.argv) > 2 else 0) as served:
        print(served.port, flush=True)
        sys.stdin.read()
