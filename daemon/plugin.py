"""The public plugin API: what a guardrail or policy plugin file imports.

    from daemon.plugin import Plugin, Deny

    class RateLimit(Plugin):
        name = "rate_limit"       # unique; a new file with the same name replaces it
        version = 2               # must change for a hot upgrade
        priority = 10             # lower runs first (then by name)

        def initial_state(self):                    # fresh state for a first load
            return {"buckets": {}}
        def migrate(self, old_state, old_version):  # OTP code_change: old -> new state
            return old_state
        async def before_call(self, call):          # Deny(...), a rewritten Call, or None
            ...
        async def after_call(self, call, result):   # Deny(...), a rewritten result, or None
            ...

Either hook may be left out.  Either may also be a plain function (``def``) when it never
awaits: it is then called without a coroutine, which costs a call less, and when every
hook a tool call meets is one, a call to a built-in tool runs without a coroutine at all
(the bundled plugins' hooks are).  A hook that awaits must be ``async def``; budgets and
fail-closed apply to both alike.  A plugin sees the calls of the kinds it names in ``kinds``
(default: tool calls only): "tool", "resource" (a resources/read: ``call.tool`` is the
URI), "prompt" (a prompts/get: ``call.tool`` is <upstream>__<prompt>, ``call.arguments``
the prompt's), "completion", "llm" (an AI gateway request: ``call.tool`` the model,
``call.arguments`` the request body; after_call's result is the response body, and
streamed answers go through ``on_chunk``, see Plugin.stream_window).  ``texts(result)``
and ``map_texts(result, fn)`` reach the text of tool, resource and prompt results
(daemon.llm.texts those of both LLM APIs).

``self.state`` is the live state: plain JSON-able data, so
that it can be snapshotted and handed to ``migrate``.  ``self.config`` is the plugin's own
``[plugins.config.NAME]`` table, ``self.log`` a logger, ``self.clock()`` monotonic seconds.
A hook that raises or overruns its time budget denies the call (fail closed).

A plugin may declare the schema of its table, so that a typo is refused at start, at
reload and by `plugins check` instead of failing calls; ``self.config`` is then the
validated value (an instance of the schema, defaults filled in):

    class Limits(PluginConfig):       # a msgspec Struct; unknown keys are refused
        max_calls: int = 1000

    class Quota(Plugin):
        config_schema = Limits        # self.config.max_calls

The table's "mode" and "budget_ms" keys belong to the gateway and never reach the plugin.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import msgspec

DenyKind = Literal["policy", "guardrail", "rate_limit"]


@dataclass(frozen=True)
class Deny:
    """Refuse the call; the agent gets a result with isError and this reason.

    ``redacted``: what the audit record may keep of the arguments instead of what the
    agent sent (a guardrail that blocks a secret passes the arguments with the secret
    masked); None keeps them as they were.  The record always has their sha256."""

    reason: str
    kind: DenyKind = "policy"
    redacted: Any = None


@dataclass(frozen=True, init=False)
class Call:
    """One tool call as a plugin sees it.  Return ``call.with_arguments(...)`` to
    rewrite the arguments."""

    agent: str
    roles: tuple[str, ...]
    tool: str
    arguments: dict[str, Any]
    input_schema: dict[str, Any] | None = None  # the tool's JSON schema for arguments
    description: str = ""  # the tool's description, as tools/list shows it
    kind: str = "tool"  # "tool" | "resource" | "prompt" | "completion" | "llm"

    def __init__(self, agent: str, roles: tuple[str, ...], tool: str,
                 arguments: dict[str, Any], input_schema: dict[str, Any] | None = None,
                 description: str = "", kind: str = "tool") -> None:
        # Still frozen to plugins; set through __dict__ once here, since the generated
        # frozen __init__ (an object.__setattr__ per field) cost 0.8 µs of every call
        self.__dict__.update(agent=agent, roles=roles, tool=tool, arguments=arguments,
                             input_schema=input_schema, description=description, kind=kind)

    def with_arguments(self, arguments: dict[str, Any]) -> Call:
        return dataclasses.replace(self, arguments=arguments)


class PluginConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """A base for a plugin's ``config_schema``: typed fields with defaults, unknown keys
    refused (nested tables too, when they derive from it)."""


class Plugin:
    name: ClassVar[str] = ""
    version: ClassVar[int | str] = 1
    priority: ClassVar[int] = 100
    # The schema of [plugins.config.NAME] (a msgspec Struct); None takes any table
    config_schema: ClassVar[type[msgspec.Struct] | None] = None
    # The kinds of call this plugin sees (Call.kind); others pass it by, so a tool-only
    # plugin never fails an LLM request.  An instance may narrow them in __init__ from
    # its config: ``self.kinds = frozenset()`` when it has nothing to check under that
    # table (its hooks then never run, and records do not list it; a new table makes a
    # new instance)
    kinds: ClassVar[frozenset[str] | set[str] | list[str] | tuple[str, ...]] = frozenset(
        {"tool"})
    # The kinds one hook sees, when fewer than ``kinds`` (a hook with nothing to do for a
    # kind is not run for it): {"before_call": {"llm", "a2a"}}
    hook_kinds: ClassVar[dict[str, frozenset[str] | set[str] | list[str] | tuple[str, ...]]] \
        = {}
    # Streamed LLM answers: an ``async def on_chunk(self, call, text, final)`` hook gets
    # the text as it streams and returns it rewritten, a Deny, or None (unchanged).  The
    # gateway holds back the last ``stream_window`` characters of what the hooks passed
    # and hands them to the next call again, with the new text appended, so a match of up
    # to stream_window characters split across chunks is still whole in one call; the
    # held text is let go at the end (final=True).  Hooks may therefore see a character
    # more than once, but only text they have passed reaches the agent.  Until final, the
    # text's last word may be cut: judge the rest and pass it on as it is (see
    # daemon.llm.texts.settled), it comes back whole with the next chunk.
    stream_window: ClassVar[int] = 0

    def __init__(self, config: Any = None, log: logging.Logger | None = None) -> None:
        # the validated schema instance, or the raw table (a dict) without a schema
        self.config: Any = {} if config is None else config
        self.log = log or logging.getLogger(f"plugin.{self.name}")
        self.state: Any = None

    @staticmethod
    def clock() -> float:
        return time.monotonic()

    def initial_state(self) -> Any:
        return {}

    def migrate(self, old_state: Any, old_version: int | str) -> Any:
        return old_state

    def self_test(self) -> None:
        """Raise if this version is unfit to serve."""

    def close(self) -> None:
        """Release what the plugin holds (threads, files)."""


def _blocks(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The blocks of a result that may carry text: a tool's content, a resource's
    contents, a prompt's messages' content."""
    blocks = [b for key in ("content", "contents") for b in result.get(key) or ()
              if isinstance(b, dict)]
    for message in result.get("messages") or ():
        if isinstance(message, dict) and isinstance(message.get("content"), dict):
            blocks.append(message["content"])
    return blocks


def texts(result: dict[str, Any]) -> list[str]:
    """Every text in a tool, resource or prompt result."""
    content = result.get("content")
    if isinstance(content, list) and "contents" not in result and "messages" not in result:
        # a tool's result, the common case: one pass (guardrails ask on every call), a
        # loop rather than a comprehension (its own frame, a fifth of the cost here)
        found = []
        for b in content:
            if isinstance(b, dict):
                text = b.get("text")
                if isinstance(text, str):
                    found.append(text)
        return found
    return [b["text"] for b in _blocks(result) if isinstance(b.get("text"), str)]


def map_texts(result: dict[str, Any], rewrite: Callable[[str], str]) -> dict[str, Any]:
    """A copy of a tool, resource or prompt result with ``rewrite`` applied to each text
    (the blocks that carry none are kept as they are)."""

    def block(b: Any) -> Any:
        if isinstance(b, dict) and isinstance(b.get("text"), str):
            return {**b, "text": rewrite(b["text"])}
        return b

    out = dict(result)
    for key in ("content", "contents"):
        if isinstance(result.get(key), list):
            out[key] = [block(b) for b in result[key]]
    if isinstance(result.get("messages"), list):
        out["messages"] = [{**m, "content": block(m["content"])}
                           if isinstance(m, dict) and "content" in m else m
                           for m in result["messages"]]
    return out
