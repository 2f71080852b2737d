"""A streamed LLM answer on its way from the provider to the agent, through the
guardrails' ``on_chunk`` hooks.

Each SSE event is passed on as it arrives (a read's worth of events per frame to the
master).  Events that carry text (OpenAI choice deltas, Anthropic text_delta blocks) or a
tool call's arguments (OpenAI ``tool_calls`` deltas, Anthropic input_json_delta) go
through every on_chunk hook of the chain (plugins whose ``kinds`` hold "llm"), slot by
slot (a choice, a tool call or a content block; each slot's text of one provider read in
one hook call), with a carry-over window: the gateway keeps back the
last ``stream_window`` characters (the largest any hook asks for) of what the hooks
passed and gives them to the hooks again with the next text, so a secret split across
chunks is whole in one call; at the slot's end (final=True) everything held goes out.
A Deny ends the stream with an SSE error event.  The terminal event ([DONE], or
message_stop) is held back until after_call has seen the assembled answer, so a denial
there still ends the stream with an error rather than a clean end.

The provider's key never reaches the agent (daemon.llm.key_scrub): after the hooks, each
slot's text is scrubbed of it and may keep back an end that could begin it; each read's
bytes are scrubbed as a whole, and an event with JSON escapes is looked at unescaped.
Without hooks, a read whose texts the scrub left untouched goes out as it came.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from types import CoroutineType
from typing import Any

import orjson

from daemon.gateway.plugin_chain import Hosted, Trail, _suspended
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
from daemon.llm.bounded import ResponseTooLarge
from daemon.llm.key_scrub import KeyScrub
from daemon.plugin import Call, Deny

Delta = tuple[Any, str, bool]  # (slot, text, final): StreamText.take


class ChunkGuard:
    """The chain's on_chunk hooks for one stream, and the text each slot holds back."""

    def __init__(self, chain: tuple[Hosted, ...], call: Call,
                 scrub: KeyScrub | None = None) -> None:
        self.call = call
        self.scrub = scrub  # the provider's key, kept from the agent
        self.hooks = [(h, hook) for h in chain
                      if call.kind in getattr(h.plugin, "kinds", ())
                      and (hook := getattr(h.plugin, "on_chunk", None)) is not None]
        self.window = max((int(getattr(h.plugin, "stream_window", 0)) for h, _ in self.hooks),
                          default=0)
        self.judges = bool(self.hooks) or scrub is not None  # texts are looked at
        self.held: dict[Any, str] = {}
        self.spent: dict[str, list[Any]] = {}  # plugin -> [version, seconds, rewrites]

    async def pass_text(self, slot: Any, text: str, final: bool) -> str | tuple[Hosted, Deny]:
        """What of the slot's text may go out now, or (plugin, Deny)."""
        pending = self.held.pop(slot, "") + text
        for hosted, hook in self.hooks:
            started = time.monotonic()
            try:
                verdict = hook(self.call, pending, final)
                if type(verdict) is CoroutineType:
                    # started here, inline: most never await, and for them a timer per
                    # hook and read (asyncio.timeout) was most of what a stream cost
                    coro = verdict
                    try:
                        waiting = coro.send(None)
                    except StopIteration as done:
                        verdict = done.value
                    else:  # the rest under a timeout of what is left of its budget
                        verdict = await _suspended(hosted, coro, waiting, None, 0, started,
                                                   b"")
                elif inspect.isawaitable(verdict):
                    async with asyncio.timeout(hosted.budget):
                        verdict = await verdict
                # else a plain def's verdict, as for before_call and after_call
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
        keep = ""
        if self.scrub is not None:
            pending, keep = self.scrub.text(pending, final)
        if final or not (self.window or keep):
            return pending
        cut = max(0, len(pending) - self.window)
        self.held[slot] = pending[cut:] + keep
        return pending[:cut]

    def note(self, trail: Trail) -> None:
        """One decision per plugin for the whole stream, in the audit record."""
        for name, (version, seconds, rewrites) in self.spent.items():
            trail.append((name, version, "on_chunk", "rewrite" if rewrites else "allow",
                          None, seconds))


class StreamRelay:
    """Reads the provider's SSE bytes, sends the agent's (``send``: one frame of bytes)."""

    def __init__(self, api: Api, guard: ChunkGuard, send: Callable[[bytes], None],
                 on_token: Callable[[], None], drop_usage_chunk: bool,
                 room: Callable[[], Awaitable[None]] | None = None,
                 max_text: int = 0) -> None:
        self.api = api
        self.max_text = max_text  # [llm] max_response_bytes of text kept (0: no cap)
        self.kept = 0
        self.guard = guard
        self.send = send
        self.on_token = on_token
        self.room = room  # returns once the agent has taken enough (stream_credit)
        self.drop_usage_chunk = drop_usage_chunk  # injected include_usage the agent did
        self.text = StreamText(api)               # not ask for: its chunk is not sent
        self.events = Events()
        self.terminal = b""  # held back until after_call has spoken
        self.denied: tuple[Hosted, Deny] | None = None
        self.failed: str | None = None  # the provider's error event ended the stream
        self.untouched = True  # the last read's texts all passed as they came
        self.tokenless = True  # no text yet (on_token is called at the first)

    async def relay(self, chunks: Any) -> None:
        """Until the provider's stream ends or a guardrail denies it."""
        async for data in chunks:
            if await self._feed(self.events.feed(data)):
                return
            if self.room is not None:  # no further provider read until the agent reads
                await self.room()
        await self._feed(self.events.rest())
        if self.denied is None and (rest := self._flush_all()):
            self.send(rest)

    async def _feed(self, events: list[bytes]) -> bool:
        """One read's events: the guardrails judge each slot's text of the whole read at
        once (one hook call per slot and read, not per event), then the events go out
        with what passed in each slot's last event of the read."""
        parsed = []
        for raw in events:
            parsed.append(self._parse(raw))
            if self.failed is not None:  # nothing after the provider's error event
                break
        untouched = True
        if self.guard.judges:
            verdicts = await self._judge(parsed)
            if verdicts is None:
                hosted, deny = self.denied  # type: ignore[misc]
                self.send(self.api.stream_error(403, f"Denied by {hosted.name}: "
                                                     f"{deny.reason}"))
                return True
            untouched = not self.guard.hooks and self.untouched
        else:
            verdicts = {}
        # backwards, so that what passed goes out in each slot's last event of the read
        # (verdicts.pop: the slot's earlier events of the read carry "")
        out = [self._event(raw, name, event, deltas, verdicts, untouched)
               for raw, name, event, deltas in reversed(parsed)]
        data = b"".join(reversed(out))
        if self.guard.scrub is not None:
            data = self.guard.scrub.data(data)
        if data:
            self.send(data)
        return self.failed is not None

    def _parse(self, raw: bytes) -> tuple[bytes, str | None, Any, list[Delta]]:
        """(raw, event name, its JSON or None, its text deltas)."""
        name, data = parse_event(raw)
        if (self.api is OpenAi and data == b"[DONE]") or (
                self.api is Anthropic and name == "message_stop"):
            self.terminal = raw
            return b"", name, None, []
        try:
            event = orjson.loads(data)
        except orjson.JSONDecodeError:
            return raw, name, None, []  # not ours to judge: passed on as it came
        if self.guard.scrub is not None and b"\\" in data:  # the key may hide escaped
            clean, event = self.guard.scrub.json(data, event)
            if clean is not data:
                raw = sse(clean, name)
        failed = provider_error(event, name)
        if failed is not None:  # the provider's own error event: it ends the stream
            self.failed, self.terminal = failed, raw
            return b"", name, None, []
        if not isinstance(event, dict):
            return raw, name, None, []
        deltas = self.text.take(event)
        if deltas:
            size = sum(len(text) for _slot, text, _final in deltas)
            if size:
                if self.tokenless:
                    self.tokenless = False
                    self.on_token()
                self.kept += size
                if self.max_text and self.kept > self.max_text:
                    raise ResponseTooLarge(self.max_text, "streamed text")
        return raw, name, event, deltas

    async def _judge(self, parsed: list[tuple[bytes, str | None, Any, list[Delta]]],
                     ) -> dict[Any, str] | None:
        """Each slot's text of this read through the hooks: slot -> what passed, or None
        when a hook denied (self.denied says who)."""
        pieces: dict[Any, list[str]] = {}
        final: dict[Any, bool] = {}
        for _raw, _name, _event, deltas in parsed:
            for slot, text, last in deltas:
                pieces.setdefault(slot, []).append(text)
                final[slot] = final.get(slot, False) or last
        verdicts = {}
        self.untouched = True  # every text passed as it came, none held back
        for slot, texts in pieces.items():
            whole = "".join(texts)
            passed = await self.guard.pass_text(slot, whole, final[slot])
            if isinstance(passed, tuple):
                self.denied = passed
                return None
            verdicts[slot] = passed
            if passed != whole or slot in self.guard.held:
                self.untouched = False
        return verdicts

    def _event(self, raw: bytes, name: str | None, event: Any, deltas: list[Delta],
               verdicts: dict[Any, str], untouched: bool) -> bytes:
        if event is None:
            return raw
        if (self.drop_usage_chunk and event.get("choices") == []
                and event.get("usage") is not None):
            return b""
        if not deltas:
            return raw
        if untouched:  # as it came (no hooks, and the key scrub changed nothing)
            for slot, text, _final in deltas:
                self.text.texts.setdefault(slot, []).append(text)
            return raw
        passes = [(slot, verdicts.pop(slot, ""), final) for slot, _text, final in deltas]
        if not any(passed for _slot, passed, _final in passes) and _only_text(self.api, event):
            # every text of the event held back (for now), and nothing else in it: it is
            # left out, and the held text goes out in a later event
            for slot, _passed, _final in passes:
                self.text.texts.setdefault(slot, [])  # the slot is known (finished())
            return b""
        prefix = b""
        for slot, passed, final in passes:
            if final and self.api is Anthropic:
                if passed:
                    prefix += self.text.flush_event(slot, passed)
            else:
                event = self.text.put(event, slot, passed)
        if self.api is Anthropic and event.get("type") == "content_block_stop":
            return prefix + raw
        return prefix + sse(orjson.dumps(event), name)

    def _flush_all(self) -> bytes:
        """Text still held when the stream ended without closing its slots."""
        return b"".join(self.text.flush_event(slot, text)
                        for slot in list(self.guard.held) if (text := self.guard.held.pop(slot)))


def _only_text(api: Api, event: dict[str, Any]) -> bool:
    """Whether an event carries nothing but text deltas (no role, tool call, finish or
    usage), so that with its text held back it may be left out."""
    if api is Anthropic:
        return event.get("type") == "content_block_delta" and (
            event.get("delta") or {}).get("type") == "text_delta"
    if event.get("usage") is not None:
        return False
    for choice in event.get("choices") or ():
        if not isinstance(choice, dict) or choice.get("finish_reason") is not None \
                or choice.get("logprobs") is not None \
                or not set(choice.get("delta") or {}) <= {"content"}:
            return False
    return True
