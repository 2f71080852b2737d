"""What a plugin reads and rewrites of an LLM request or response (``call.kind == "llm"``).

A plugin's hooks see the API's own JSON: ``call.arguments`` is the request body (OpenAI
chat/embeddings or Anthropic messages), ``after_call``'s result the response body (for a
stream: the response assembled from its chunks, in the non-streamed shape).  These
helpers walk the texts of either API, so a guardrail need not know both:

    from daemon.llm.texts import map_texts, usage_of
    redacted = map_texts(call.arguments, self.redact)   # the same object if unchanged
    prompt_tokens, completion_tokens = usage_of(result) or (0, 0)
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

Rewrite = Callable[[str], str]


def map_texts(body: Any, rewrite: Rewrite, tool_outputs_only: bool = False) -> Any:
    """``body`` with ``rewrite`` applied to each text it carries (prompts, system,
    embedding inputs, completions); the same object when nothing changed.
    ``tool_outputs_only``: only the texts of tool results inside a prompt (OpenAI
    "tool" messages, Anthropic "tool_result" blocks)."""
    # Plain loops, no closure or lambda per call: every guardrail walks every request
    # and answer, so this runs several times per LLM request.
    if not isinstance(body, dict):
        return body
    out = body
    messages = body.get("messages")
    if isinstance(messages, list):
        out = _put(out, body, "messages", _each(messages, _message, rewrite, tool_outputs_only))
    if tool_outputs_only:
        return out
    if "system" in body:
        out = _put(out, body, "system", _content(body["system"], rewrite, True, False))
    if "input" in body:  # embeddings
        value = body["input"]
        if isinstance(value, str):
            out = _put(out, body, "input", rewrite(value))
        elif isinstance(value, list):
            out = _put(out, body, "input", _each(value, _input, rewrite))
    choices = body.get("choices")
    if isinstance(choices, list):
        out = _put(out, body, "choices", _each(choices, _choice, rewrite))
    if "content" in body and body.get("type") == "message":  # Anthropic
        out = _put(out, body, "content", _content(body["content"], rewrite, True, False))
    return out


def _put(out: dict[str, Any], body: dict[str, Any], key: str, value: Any) -> dict[str, Any]:
    """``out`` with ``key`` set to ``value``: a copy of ``body`` the first time a value
    changes."""
    if value is out.get(key):
        return out
    if out is body:
        out = dict(body)
    out[key] = value
    return out


def texts(body: Any, tool_outputs_only: bool = False) -> list[str]:
    """Every text ``map_texts`` would visit."""
    found: list[str] = []

    def collect(text: str) -> str:
        found.append(text)
        return text
    map_texts(body, collect, tool_outputs_only)
    return found


# Where a word ends: whitespace, and the punctuation of JSON (a tool call's arguments
# stream as JSON, often without a space in them)
_BREAKS = re.compile(r'[\s"\',{}\[\]]')
OPEN_MAX = 32  # the longest open end: keep it below your plugin's stream_window


def settled(text: str, final: bool) -> tuple[str, str]:
    """For ``on_chunk``: (the text a guardrail may judge now, the open end it should pass
    on as it is).  Unless the stream's text is final, its last word may go on in the next
    chunk ("jane@example.co" + "m"): a guardrail that rewrote it now would rewrite a
    fragment.  The gateway holds that end back (stream_window) and hands it over again
    with what follows.  The open end is at most OPEN_MAX characters, so that a long run
    without a break (JSON arguments, a base64 blob) is judged too rather than passed on
    past the window unread."""
    if final:
        return text, ""
    cut, floor = len(text), max(0, len(text) - OPEN_MAX)
    while cut > floor and not _BREAKS.match(text, cut - 1):
        cut -= 1
    return text[:cut], text[cut:]


def usage_of(response: Any) -> tuple[int, int] | None:
    """(prompt tokens, completion tokens) a response reports, in either API's terms."""
    usage = response.get("usage") if isinstance(response, dict) else None
    if not isinstance(usage, dict):
        return None
    if "prompt_tokens" in usage or "completion_tokens" in usage:
        return _int(usage.get("prompt_tokens")), _int(usage.get("completion_tokens"))
    if "input_tokens" in usage or "output_tokens" in usage:
        prompt = sum(_int(usage.get(k)) for k in ("input_tokens", "cache_creation_input_tokens",
                                                  "cache_read_input_tokens"))
        return prompt, _int(usage.get("output_tokens"))
    return None


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _each(items: list[Any], change: Callable[..., Any], *args: Any) -> list[Any]:
    """``items`` with ``change(item, *args)`` applied; the same list when nothing changed,
    else a copy made at the first change (no closure per call: the args ride along)."""
    new = None
    for i, item in enumerate(items):
        changed = change(item, *args)
        if changed is not item:
            if new is None:
                new = list(items)
            new[i] = changed
    return items if new is None else new


def _input(value: Any, rewrite: Rewrite) -> Any:
    return rewrite(value) if isinstance(value, str) else value


def _message(message: Any, rewrite: Rewrite, tool_outputs_only: bool) -> Any:
    if not isinstance(message, dict) or "content" not in message:
        return message
    content = message["content"]
    if isinstance(content, str):  # the common case, without the general walk
        if tool_outputs_only and message.get("role") != "tool":
            return message
        text = rewrite(content)
        return message if text is content else {**message, "content": text}
    is_tool = message.get("role") == "tool"
    changed = _content(content, rewrite, is_tool or not tool_outputs_only, tool_outputs_only)
    return message if changed is content else {**message, "content": changed}


def _content(content: Any, rewrite: Rewrite, visit: bool, tool_outputs_only: bool) -> Any:
    """A message's content: a string, or a list of parts/blocks."""
    if isinstance(content, str):
        return rewrite(content) if visit else content
    if not isinstance(content, list):
        return content
    return _each(content, _part, rewrite, visit, tool_outputs_only)


def _part(block: Any, rewrite: Rewrite, visit: bool, tool_outputs_only: bool) -> Any:
    if not isinstance(block, dict):
        return block
    kind = block.get("type")
    if kind == "text" and visit and isinstance(block.get("text"), str):
        text = rewrite(block["text"])
        return block if text is block["text"] else {**block, "text": text}
    if kind == "tool_result" and "content" in block:
        inner = _content(block["content"], rewrite, True, tool_outputs_only)
        return block if inner is block["content"] else {**block, "content": inner}
    return block


def _choice(choice: Any, rewrite: Rewrite) -> Any:
    if not isinstance(choice, dict):
        return choice
    for key in ("message", "delta"):
        inner = choice.get(key)
        if isinstance(inner, dict) and isinstance(inner.get("content"), str):
            text = rewrite(inner["content"])
            if text is not inner["content"]:
                return {**choice, key: {**inner, "content": text}}
            return choice
    if isinstance(choice.get("text"), str):  # legacy completions
        text = rewrite(choice["text"])
        return choice if text is choice["text"] else {**choice, "text": text}
    return choice
