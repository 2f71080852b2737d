"""A streamed LLM answer on its way from the provider to the agent, through the
guardrails' ``on_chunk`` hooks.

Each SSE event is passed on as it arrives (a read's worth of events per frame to the
master).  Events that carry text (OpenAI choice deltas, Anthropic text_delta blocks) go
through every on_chunk hook of the chain (plugins whose ``kinds`` hold "llm"), slot by
slot (a choice or a content block), with a carry-over window: the gateway keeps back the
last ``stream_window`` characters (the largest any hook asks for) of what the hooks
passed and gives them to the hooks again with the next text, so a secret split across
chunks is whole in one call; at the slot's end (final=True) everything held goes out.
A Deny ends the stream with an SSE error event.  The terminal event ([DONE], or
message_stop) is held back until after_call has seen the assembled answer, so a denial
there still ends the stream with an error rather than a clean end.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import orjson

from daemon.gateway.plugin_chain import Hosted, Trail
from daemon.llm.apis import (
    Anthropic,
    Api,
    Events,
    OpenAi,
    StreamText,
    parse_event,
    provider_error,
    sse,
)
from daemon.plugin import Call, Deny


class ChunkGuard:
    """The chain's on_chunk hooks for one stream, and the text each slot holds back."""

    def __init__(self, chain: tuple[Hosted, ...], call: Call) -> None:
        self.call = call
        self.hooks = [(h, hook) for h in chain
                      if call.kind in getattr(h.plugin, "kinds", ())
                      and (hook := getattr(h.plugin, "on_chunk", None)) is not None]
        self.window = max((int(getattr(h.plugin, "stream_window", 0)) for h, _ in self.hooks),
                          default=0)
        self.held: dict[int, str] = {}
        self.spent: dict[str, list[Any]] = {}  # plugin -> [version, seconds, rewrites]

    async def pass_text(self, slot: int, text: str, final: bool) -> str | tuple[Hosted, Deny]:
        """What of the slot's text may go out now, or (plugin, Deny)."""
        pending = self.held.pop(slot, "") + text
        for hosted, hook in self.hooks:
            started = time.monotonic()
            try:
                async with asyncio.timeout(hosted.budget):
                    verdict = await hook(self.call, pending, final)
            except TimeoutError:
                verdict = Deny(f"plugin {hosted.name} overran its {hosted.budget * 1000:g} "
                               "ms budget", "guardrail")
            except Exception as exc:
                verdict = Deny(f"plugin {hosted.name} failed ({exc.__class__.__name__})",
                               "guardrail")
            spent = self.spent.setdefault(hosted.name, [str(hosted.version), 0.0, 0])
            spent[1] += time.monotonic() - started
            if isinstance(verdict, Deny):
                if hosted.mode != "permissive":
                    return hosted, verdict
            elif isinstance(verdict, str):
                if verdict != pending:
                    spent[2] += 1
                pending = verdict
            elif verdict is not None:
                return hosted, Deny(f"plugin {hosted.name} returned "
                                    f"{type(verdict).__name__} from on_chunk", "guardrail")
        if final or not self.window:
            return pending
        cut = max(0, len(pending) - self.window)
        self.held[slot] = pending[cut:]
        return pending[:cut]

    def note(self, trail: Trail) -> None:
        """One decision per plugin for the whole stream, in the audit record."""
        for name, (version, seconds, rewrites) in self.spent.items():
            trail.append((name, version, "on_chunk", "rewrite" if rewrites else "allow",
                          None, seconds))


class StreamRelay:
    """Reads the provider's SSE bytes, sends the agent's (``send``: one frame of bytes)."""

    def __init__(self, api: Api, guard: ChunkGuard, send: Callable[[bytes], None],
                 on_token: Callable[[], None], drop_usage_chunk: bool) -> None:
        self.api = api
        self.guard = guard
        self.send = send
        self.on_token = on_token
        self.drop_usage_chunk = drop_usage_chunk  # injected include_usage the agent did
        self.text = StreamText(api)               # not ask for: its chunk is not sent
        self.events = Events()
        self.terminal = b""  # held back until after_call has spoken
        self.denied: tuple[Hosted, Deny] | None = None
        self.failed: str | None = None  # the provider's error event ended the stream

    async def relay(self, chunks: Any) -> None:
        """Until the provider's stream ends or a guardrail denies it."""
        async for data in chunks:
            if await self._feed(self.events.feed(data)):
                return
        await self._feed(self.events.rest())
        if self.denied is None:
            self.send(self._flush_all())

    async def _feed(self, events: list[bytes]) -> bool:
        out = []
        for raw in events:
            passed = await self._event(raw)
            out.append(passed)
            if self.denied is not None or self.failed is not None:
                break
        if out:
            data = b"".join(out)
            if data:
                self.send(data)
        return self.denied is not None or self.failed is not None

    async def _event(self, raw: bytes) -> bytes:
        name, data = parse_event(raw)
        if self.api is OpenAi and data == b"[DONE]":
            self.terminal = raw
            return b""
        if self.api is Anthropic and name == "message_stop":
            self.terminal = raw
            return b""
        try:
            event = orjson.loads(data)
        except orjson.JSONDecodeError:
            return raw  # not ours to judge: passed on as it came
        failed = provider_error(event, name)
        if failed is not None:  # the provider's own error event: it ends the stream
            self.failed, self.terminal = failed, raw
            return b""
        deltas = self.text.take(event)
        if not isinstance(event, dict):
            return raw
        if (self.drop_usage_chunk and event.get("choices") == []
                and event.get("usage") is not None):
            return b""
        if not deltas:
            return raw
        if any(text for _slot, text, _final in deltas):
            self.on_token()
        prefix = b""
        for slot, text, final in deltas:
            if not self.guard.hooks:
                self.text.texts.setdefault(slot, []).append(text)
                continue
            passed = await self.guard.pass_text(slot, text, final)
            if isinstance(passed, tuple):
                self.denied = passed
                hosted, deny = passed
                return self.api.stream_error(403, f"Denied by {hosted.name}: {deny.reason}")
            if self.api is Anthropic and final:
                if passed:
                    prefix += self.text.flush_event(slot, passed)
            else:
                event = self.text.put(event, slot, passed)
        if not self.guard.hooks:
            return raw
        return prefix + (raw if self.api is Anthropic and event.get("type") ==
                         "content_block_stop" else sse(orjson.dumps(event), name))

    def _flush_all(self) -> bytes:
        """Text still held when the stream ended without closing its slots."""
        out = []
        for slot in list(self.guard.held):
            text = self.guard.held.pop(slot)
            if not text:
                continue
            if self.api is Anthropic:
                out.append(self.text.flush_event(slot, text))
            else:
                chunk = {**(self.text.first or {}), "object": "chat.completion.chunk",
                         "choices": [{"index": slot, "delta": {"content": text},
                                      "finish_reason": None}]}
                chunk.pop("usage", None)
                self.text.texts.setdefault(slot, []).append(text)
                out.append(sse(orjson.dumps(chunk)))
        return b"".join(out)
