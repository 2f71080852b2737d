"""The two LLM wire formats the gateway speaks, OpenAI's and Anthropic's: their error
bodies, their SSE events, and how a stream's text chunks are found, rewritten and
assembled into the response a non-streamed request would have had.

Errors keep each API's own shape, so the official SDKs raise their usual exceptions:
OpenAI ``{"error": {"message", "type", "param", "code"}}``, Anthropic ``{"type": "error",
"error": {"type", "message"}}``.  Mid-stream, OpenAI clients take a ``data:`` event whose
JSON has "error"; Anthropic clients an ``event: error``.
"""

from __future__ import annotations

from typing import Any

import orjson

# HTTP status -> (OpenAI error type, Anthropic error type)
ERROR_TYPES = {400: ("invalid_request_error", "invalid_request_error"),
               401: ("invalid_request_error", "authentication_error"),
               403: ("permission_error", "permission_error"),
               404: ("invalid_request_error", "not_found_error"),
               413: ("invalid_request_error", "request_too_large"),
               429: ("rate_limit_error", "rate_limit_error"),
               500: ("server_error", "api_error"),
               502: ("server_error", "api_error"),
               503: ("server_error", "overloaded_error"),
               504: ("timeout_error", "timeout_error")}


def sse(data: bytes, event: str | None = None) -> bytes:
    head = b"event: " + event.encode() + b"\n" if event else b""
    return head + b"data: " + data + b"\n\n"


MAX_EVENT = 8 << 20  # bytes of one SSE event: a provider that never ends one is broken


class EventTooLarge(ValueError):
    pass


class Events:
    """Splits SSE bytes into events (``\\n\\n``-terminated), across reads."""

    def __init__(self) -> None:
        self.buffer = b""

    def feed(self, data: bytes) -> list[bytes]:
        start = max(0, len(self.buffer) - 1)  # only the new bytes can end an event
        self.buffer += data.replace(b"\r\n", b"\n") if b"\r" in data else data
        if self.buffer.find(b"\n\n", start) < 0:
            if len(self.buffer) > MAX_EVENT:
                raise EventTooLarge(f"an event of more than {MAX_EVENT >> 20} MiB")
            return []
        *events, self.buffer = self.buffer.split(b"\n\n")
        return [e + b"\n\n" for e in events if e.strip()]

    def rest(self) -> list[bytes]:
        rest, self.buffer = self.buffer, b""
        return [rest + b"\n\n"] if rest.strip() else []


def parse_event(raw: bytes) -> tuple[str | None, bytes]:
    """(event name, data) of one SSE event."""
    if raw.startswith(b"data: ") and raw.endswith(b"\n\n") and raw.find(b"\n") == len(raw) - 2:
        return None, raw[6:-2]  # the common event: one data line, then its blank line
    name, data = None, []
    for line in raw.split(b"\n"):
        if line.startswith(b"data:"):
            data.append(line[5:].removeprefix(b" "))
        elif line.startswith(b"event:"):
            name = line[6:].strip().decode(errors="replace")
    return name, b"\n".join(data)


def provider_error(body: Any, event: str | None = None) -> str | None:
    """The message of an error a provider sent with a 200 (a whole body, or an event of
    its stream: OpenAI-compatible servers send ``{"error": …}``, Anthropic ``event:
    error``), or None when ``body`` is not one."""
    if not isinstance(body, dict):
        return None
    error = body.get("error")
    if error is None or not (event == "error" or body.get("type") == "error" or not any(
            k in body for k in ("choices", "content", "data", "object"))):
        return None
    message = error.get("message") if isinstance(error, dict) else error
    return str(message or error)[:300]


class OpenAi:
    name = "openai"

    @staticmethod
    def error(status: int, message: str, code: str | None = None) -> bytes:
        kind = ERROR_TYPES.get(status, ("server_error", "api_error"))[0]
        return orjson.dumps({"error": {"message": message, "type": kind, "param": None,
                                       "code": code}})

    @classmethod
    def stream_error(cls, status: int, message: str) -> bytes:
        return sse(cls.error(status, message))

    @staticmethod
    def terminal() -> bytes:
        return b"data: [DONE]\n\n"

    @staticmethod
    def not_found(model: str) -> tuple[str, str]:
        return (f"The model `{model}` does not exist or you do not have access to it.",
                "model_not_found")


class Anthropic:
    name = "anthropic"

    @staticmethod
    def error(status: int, message: str, code: str | None = None) -> bytes:
        kind = ERROR_TYPES.get(status, ("server_error", "api_error"))[1]
        return orjson.dumps({"type": "error", "error": {"type": kind, "message": message}})

    @classmethod
    def stream_error(cls, status: int, message: str) -> bytes:
        return sse(cls.error(status, message), "error")

    @staticmethod
    def terminal() -> bytes:
        return sse(b'{"type":"message_stop"}', "message_stop")

    @staticmethod
    def not_found(model: str) -> tuple[str, str]:
        return f"model: {model}", "not_found_error"


Api = type[OpenAi] | type[Anthropic]


class StreamText:
    """One stream's events as they pass: text deltas found (per choice or content block)
    so a guardrail can rewrite them, usage collected, the whole answer assembled.

    ``take(data)`` is the event's parsed JSON; it returns the texts to inspect as
    (slot, text, final) and the gateway writes the inspected text back with ``put``.  A
    slot is a choice's index or an Anthropic content block's, or (choice, call index) for
    an OpenAI tool call: a tool call's arguments (OpenAI ``function.arguments`` deltas,
    Anthropic ``input_json_delta``) are text like any other, so the guardrails read them
    as they stream."""

    def __init__(self, api: Api) -> None:
        self.api = api
        self.texts: dict[Any, list[str]] = {}  # slot -> the text passed on, in pieces
        self.first: dict[str, Any] | None = None  # the first event (ids, model)
        self.usage: dict[str, Any] = {}
        self.finish: dict[int, Any] = {}
        self.calls: dict[tuple[int, int], dict[str, Any]] = {}  # OpenAI tool calls
        self.blocks: dict[int, dict[str, Any]] = {}  # Anthropic content blocks
        self.stop: dict[str, Any] = {}

    def is_call(self, slot: Any) -> bool:
        """Whether a slot is a tool call's arguments (not text the agent reads)."""
        return isinstance(slot, tuple) or self.blocks.get(slot, {}).get("type") == "tool_use"

    # -- reading ----------------------------------------------------------------------

    def take(self, data: Any) -> list[tuple[Any, str, bool]]:
        """The text deltas of one event: (slot, text, final: the slot's last)."""
        if not isinstance(data, dict):
            return []
        if self.first is None:
            self.first = data
        if self.api is OpenAi:
            return self._take_openai(data)
        return self._take_anthropic(data)

    def _take_openai(self, data: dict[str, Any]) -> list[tuple[Any, str, bool]]:
        if isinstance(data.get("usage"), dict):
            self.usage = data["usage"]
        out: list[tuple[Any, str, bool]] = []
        for choice in data.get("choices") or ():
            if not isinstance(choice, dict):
                continue
            index = choice.get("index", 0)
            delta = choice.get("delta") or {}
            finish = choice.get("finish_reason")
            final = finish is not None
            if final:
                self.finish[index] = finish
            calls = delta.get("tool_calls")
            for call in calls if isinstance(calls, list) else ():
                if not isinstance(call, dict):
                    continue
                slot = (index, call.get("index", 0))
                known = self.calls.setdefault(slot, {"function": {"arguments": ""}})
                for key in ("id", "type"):
                    if key in call:
                        known[key] = call[key]
                function = call.get("function") or {}
                if "name" in function:
                    known["function"]["name"] = function["name"]
                arguments = function.get("arguments")
                out.append((slot, arguments if isinstance(arguments, str) else "", False))
            if final:  # the choice's tool calls end with it
                out += [(slot, "", True) for slot in self.calls if slot[0] == index
                        and not any(o[0] == slot for o in out)]
                out = [(slot, text, True) if isinstance(slot, tuple) and slot[0] == index
                       else (slot, text, last) for slot, text, last in out]
            text = delta.get("content")
            if isinstance(text, str) or final:
                out.append((index, text if isinstance(text, str) else "", final))
        return out

    def _take_anthropic(self, data: dict[str, Any]) -> list[tuple[Any, str, bool]]:
        kind = data.get("type")
        if kind == "message_start":
            message = data.get("message") or {}
            self.first = message
            self.usage = dict(message.get("usage") or {})
        elif kind == "content_block_start":
            self.blocks[data.get("index", 0)] = dict(data.get("content_block") or {})
        elif kind == "content_block_delta":
            delta = data.get("delta") or {}
            if delta.get("type") == "text_delta" and isinstance(delta.get("text"), str):
                return [(data.get("index", 0), delta["text"], False)]
            if delta.get("type") == "input_json_delta":
                part = delta.get("partial_json")
                return [(data.get("index", 0), part if isinstance(part, str) else "", False)]
        elif kind == "content_block_stop":
            index = data.get("index", 0)
            if self.blocks.get(index, {}).get("type") in ("text", "tool_use"):
                return [(index, "", True)]
        elif kind == "message_delta":
            self.stop = dict(data.get("delta") or {})
            self.usage.update(data.get("usage") or {})
        return []

    def finished(self) -> bool:
        """Whether the events so far end the answer (every choice has its finish_reason,
        or the message its stop_reason), whatever the terminal event."""
        if self.api is OpenAi:
            choices = {s for s in self.texts if isinstance(s, int)} | {
                choice for choice, _index in self.calls}
            return bool(self.finish) and choices <= set(self.finish)
        return self.stop.get("stop_reason") is not None

    # -- writing back -----------------------------------------------------------------

    def put(self, data: dict[str, Any], slot: Any, text: str) -> dict[str, Any]:
        """The event with slot's delta replaced (the guardrails' verdict)."""
        self.texts.setdefault(slot, []).append(text)
        if self.api is Anthropic:
            if data.get("type") != "content_block_delta":
                return data
            key = "partial_json" if self.is_call(slot) else "text"
            return {**data, "delta": {**data["delta"], key: text}}
        index, call_index = slot if isinstance(slot, tuple) else (slot, None)
        choices = []
        for choice in data.get("choices") or ():
            if isinstance(choice, dict) and choice.get("index", 0) == index:
                delta = dict(choice.get("delta") or {})
                if call_index is None:
                    delta["content"] = text
                elif (calls := _put_arguments(delta.get("tool_calls"), call_index, text)):
                    delta["tool_calls"] = calls
                choice = {**choice, "delta": delta}
            choices.append(choice)
        return {**data, "choices": choices}

    def flush_event(self, slot: Any, text: str) -> bytes:
        """An extra event carrying text held back until the slot's end (Anthropic: before
        its content_block_stop; OpenAI's final chunk carries it itself)."""
        if self.api is OpenAi:  # a stream that ended without closing its choices
            index = slot[0] if isinstance(slot, tuple) else slot
            chunk = {**(self.first or {}), "object": "chat.completion.chunk",
                     "choices": [{"index": index, "delta": {}, "finish_reason": None}]}
            chunk.pop("usage", None)
            return sse(orjson.dumps(self.put(chunk, slot, text)))
        self.texts.setdefault(slot, []).append(text)
        delta = {"type": "input_json_delta", "partial_json": text} if self.is_call(slot) \
            else {"type": "text_delta", "text": text}
        body = {"type": "content_block_delta", "index": slot, "delta": delta}
        return sse(orjson.dumps(body), "content_block_delta")

    # -- the whole answer -------------------------------------------------------------

    def text(self, slot: Any = 0) -> str:
        return "".join(self.texts.get(slot, ()))

    def assembled(self) -> dict[str, Any]:
        """The response a non-streamed request would have had (what after_call sees)."""
        first = self.first or {}
        if self.api is OpenAi:
            calls: dict[int, list[Any]] = {}
            for (index, call_index), call in sorted(self.calls.items()):
                function = {**call["function"], "arguments": self.text((index, call_index))}
                calls.setdefault(index, []).append({**call, "function": function})
            slots = sorted({s for s in self.texts if not isinstance(s, tuple)}
                           | set(self.finish) | set(calls)) or [0]
            choices = []
            for slot in slots:
                message: dict[str, Any] = {"role": "assistant", "content": self.text(slot)}
                if slot in calls:
                    message["tool_calls"] = calls[slot]
                choices.append({"index": slot, "message": message,
                                "finish_reason": self.finish.get(slot)})
            return {"id": first.get("id"), "object": "chat.completion",
                    "model": first.get("model"), "choices": choices,
                    "usage": self.usage or None}
        content = []
        for index in sorted(self.blocks):
            block = self.blocks[index]
            if block.get("type") == "text":
                content.append({"type": "text", "text": self.text(index)})
            elif block.get("type") == "tool_use":
                arguments = self.text(index)
                try:
                    content.append({**block, "input": orjson.loads(arguments or "{}")})
                except orjson.JSONDecodeError:  # cut off, or a rewrite broke it
                    content.append({**block, "partial_json": arguments})
            else:
                content.append(block)
        return {"id": first.get("id"), "type": "message", "role": "assistant",
                "model": first.get("model"), "content": content,
                "stop_reason": self.stop.get("stop_reason"), "usage": self.usage or None}


def _put_arguments(calls: Any, call_index: int, text: str) -> list[Any]:
    """An OpenAI delta's tool_calls with one call's arguments replaced (or added)."""
    out, found = [], False
    for call in calls if isinstance(calls, list) else ():
        if isinstance(call, dict) and call.get("index", 0) == call_index:
            found = True
            call = {**call, "function": {**(call.get("function") or {}), "arguments": text}}
        out.append(call)
    if not found and text:
        out.append({"index": call_index, "function": {"arguments": text}})
    return out
