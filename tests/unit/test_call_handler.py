"""A gateway worker's CallHandler on its own: real Policy, ToolRegistry with the built-in
tools, PluginHost and plugins; no worker process, no bus, no audit process."""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

import orjson
import pytest
import zmq

from daemon.audit.link import AuditLink
from daemon.gateway.calls import Answer, CallHandler, Pending
from daemon.gateway.permissions import Policy
from daemon.gateway.plugin_chain import Hosted
from daemon.gateway.plugin_host import PluginHost
from daemon.plugin import Call, Deny, Plugin
from daemon.protocol import jsonrpc, mcp
from daemon.tools import builtin
from daemon.tools.registry import ToolRegistry
from tests.unit.audit_writer import AuditWriter, short_endpoint


def handler(*plugins: Plugin, tool_timeouts: dict[str, float] | None = None,
            audit: AuditLink | None = None) -> CallHandler:
    tools = ToolRegistry()
    builtin.register(tools)
    policy = Policy(agent_roles={"alice": ("reader",), "bob": ("reader", "sleeper"),
                                 "root": ("admin",)},
                    role_patterns={"reader": ("ech*",), "sleeper": ("sleep",)},
                    tool_timeouts=tool_timeouts or {})
    host = PluginHost()
    host.chain = tuple(Hosted(p.name, p.version, p.priority, "0" * 64, "enforce", 1.0, p)
                       for p in plugins)
    return CallHandler(policy, tools, host, audit, worker="gateway-0")


def request(method: str, params: dict[str, Any] | None = None, rid: Any = 1) -> bytes:
    return orjson.dumps({"jsonrpc": "2.0", "id": rid, "method": method,
                         "params": params or {}})


def call(tool: str, arguments: Any = None, rid: Any = 1) -> bytes:
    return request("tools/call", {"name": tool, "arguments": arguments or {}}, rid)


def begin(handler: CallHandler, agent: str, raw: bytes) -> Answer | Pending:
    """As the worker does, with the tool name the master read from the request."""
    name = (orjson.loads(raw).get("params") or {}).get("name")
    return handler.begin(agent, name if isinstance(name, str) else None, raw)


def run(handler: CallHandler, agent: str, raw: bytes) -> Answer:
    """What the worker does: begin, and finish what must be awaited."""
    begun = begin(handler, agent, raw)
    if isinstance(begun, Pending):
        return asyncio.run(handler.finish(begun))
    return begun


def record(answer: Answer) -> dict[str, Any]:
    assert answer.record is not None
    return orjson.loads(answer.record)


def text(answer: Answer) -> str:
    return orjson.loads(answer.reply)["result"]["content"][0]["text"]


class Redactor(Plugin):
    name = "redactor"
    priority = 10

    async def before_call(self, call: Call) -> Call | None:
        if "secret" in call.arguments:
            return call.with_arguments({**call.arguments, "secret": "***"})
        return None


class Blocker(Plugin):
    name = "blocker"
    priority = 20

    async def before_call(self, call: Call) -> Deny | None:
        if call.arguments.get("text") == "forbidden":
            return Deny("no forbidden words", "guardrail",
                        redacted={**call.arguments, "text": "[removed]"})
        return None


class Shouter(Plugin):
    name = "shouter"

    async def after_call(self, call: Call, result: dict[str, Any]) -> dict[str, Any]:
        return {**result, "content": [{"type": "text", "text": "LOUD"}]}


class Withholder(Plugin):
    name = "withholder"

    async def after_call(self, call: Call, result: dict[str, Any]) -> Deny:
        return Deny("results are private")


def test_tools_list_shows_exactly_the_tools_the_agents_roles_allow():
    h = handler()
    for agent, expected in (("alice", ["echo"]), ("bob", ["echo", "sleep"]),
                            ("root", ["echo", "sleep"]), ("nobody", [])):
        answer = run(h, agent, request("tools/list"))
        listed = orjson.loads(answer.reply)["result"]["tools"]
        assert [t["name"] for t in listed] == expected
        assert answer.record is None  # not a tools/call: no audit record


def test_a_hidden_tool_answers_like_an_unknown_one_but_its_record_says_the_roles_denied_it():
    h = handler()
    hidden = run(h, "alice", call("sleep", {"seconds": 0}))
    unknown = run(h, "alice", call("no_such_tool"))
    error = orjson.loads(hidden.reply)["error"]
    assert error == {"code": jsonrpc.INVALID_PARAMS, "message": "Unknown tool: sleep"}
    assert orjson.loads(unknown.reply)["error"]["message"] == "Unknown tool: no_such_tool"
    assert record(hidden)["outcome"]["status"] == "denied"
    assert record(hidden)["outcome"]["by"] == "roles"
    (decision,) = record(hidden)["decisions"]
    assert decision["plugin"] == "roles" and decision["verdict"] == "deny"
    assert "roles reader do not allow tool sleep" in decision["reason"]
    assert record(unknown)["outcome"]["status"] == "error"


def test_an_inline_tool_without_plugins_is_answered_by_begin_itself():
    h = handler()
    begun = begin(h, "alice", call("echo", {"text": "hi"}, rid="r1"))
    assert isinstance(begun, Answer)
    assert orjson.loads(begun.reply)["id"] == "r1"
    assert orjson.loads(text(begun)) == {"text": "hi"}
    kept = record(begun)
    assert kept["kind"] == "call" and kept["agent"] == "alice" and kept["tool"] == "echo"
    assert kept["args"] == {"text": "hi"} and kept["decisions"] == []
    assert kept["outcome"]["status"] == "ok"


def test_with_plugins_the_call_is_finished_through_their_hooks_and_the_record_lists_them():
    h = handler(Redactor(), Blocker(), Shouter())
    begun = begin(h, "alice", call("echo", {"text": "hi", "secret": "hunter2"}))
    assert isinstance(begun, Pending)  # hooks must be awaited, even for an inline tool
    answer = asyncio.run(h.finish(begun))
    assert text(answer) == "LOUD"
    kept = record(answer)
    assert [(d["plugin"], d["hook"], d["verdict"]) for d in kept["decisions"]] == [
        ("redactor", "before", "rewrite"), ("shouter", "after", "rewrite")]
    assert kept["allowed"] == {"before": {"blocker": "1"}, "after": {}}  # plugin: version
    assert kept["args"] == {"text": "hi", "secret": "***"} and kept["args_redacted"]
    original = orjson.dumps({"text": "hi", "secret": "hunter2"}, option=orjson.OPT_SORT_KEYS)
    assert kept["args_sha256"] == hashlib.sha256(original).hexdigest()
    assert b"hunter2" not in answer.record


def test_a_denial_keeps_only_the_redacted_arguments_it_names_in_the_record():
    h = handler(Blocker())
    answer = run(h, "alice", call("echo", {"text": "forbidden"}))
    result = orjson.loads(answer.reply)["result"]
    assert result["isError"] is True
    assert result["_meta"][mcp.META_DENIED]["by"] == "blocker"
    assert text(answer) == "Denied by blocker: no forbidden words"
    kept = record(answer)
    assert kept["args"] == {"text": "[removed]"} and kept["args_redacted"]
    assert kept["outcome"]["status"] == "denied" and kept["outcome"]["by"] == "blocker"
    assert b"forbidden" not in answer.record.replace(b"no forbidden words", b"")


def test_a_result_withheld_by_an_after_hook_is_recorded_as_one_the_tool_produced():
    h = handler(Withholder())
    answer = run(h, "alice", call("echo", {"text": "hi"}))
    assert text(answer) == "Denied by withholder: results are private"
    kept = record(answer)
    assert kept["outcome"]["status"] == "denied"
    assert kept["withheld"]["tool_ran"] is True and kept["withheld"]["isError"] is False


def settled(coroutine: Any) -> Any:
    """The value of a coroutine that never waits."""
    try:
        coroutine.send(None)
    except StopIteration as done:
        return done.value
    raise AssertionError("it waited")


class PlainRedactor(Redactor):
    def before_call(self, call: Call) -> Any:  # type: ignore[override]
        return settled(Redactor.before_call(self, call))


class PlainBlocker(Blocker):
    def before_call(self, call: Call) -> Any:  # type: ignore[override]
        return settled(Blocker.before_call(self, call))


class PlainShouter(Shouter):
    def after_call(self, call: Call, result: dict[str, Any]) -> Any:  # type: ignore[override]
        return settled(Shouter.after_call(self, call, result))


class PlainWithholder(Withholder):
    def after_call(self, call: Call, result: dict[str, Any]) -> Any:  # type: ignore[override]
        return settled(Withholder.after_call(self, call, result))


def without_times(answer: Answer) -> dict[str, Any]:
    kept = record(answer)
    for volatile in ("t", "ms"):
        kept.pop(volatile)
    for decision in kept["decisions"]:
        decision.pop("ms")
    return kept


@pytest.mark.parametrize("plugins, arguments", [
    ((PlainRedactor(), PlainBlocker(), PlainShouter()), {"text": "hi", "secret": "hunter2"}),
    ((PlainRedactor(), PlainBlocker()), {"text": "hi"}),
    ((PlainBlocker(), PlainShouter()), {"text": "forbidden"}),
    ((PlainWithholder(),), {"text": "hi"}),
])
def test_plain_function_hooks_finish_an_inline_tools_call_at_once_with_the_same_answer(
        plugins: tuple[Plugin, ...], arguments: dict[str, Any]):
    h = handler(*plugins)
    at_once = begin(h, "alice", call("echo", arguments))
    awaited = begin(h, "alice", call("echo", arguments))
    assert isinstance(at_once, Pending) and isinstance(awaited, Pending)
    now = h.finish_now(at_once)
    assert now is not None
    later = asyncio.run(h.finish(awaited))
    assert now.reply == later.reply and now.status == later.status
    assert without_times(now) == without_times(later)


def test_a_chain_with_an_async_hook_is_not_finished_at_once():
    h = handler(PlainRedactor(), Shouter())
    begun = begin(h, "alice", call("echo", {"text": "hi"}))
    assert isinstance(begun, Pending) and h.finish_now(begun) is None
    assert text(asyncio.run(h.finish(begun))) == "LOUD"


def test_a_tool_that_outlasts_its_timeout_answers_minus_32016():
    h = handler(tool_timeouts={"sleep": 0.05})
    answer = run(h, "bob", call("sleep", {"seconds": 5}, rid=9))
    error = orjson.loads(answer.reply)["error"]
    assert error["code"] == jsonrpc.TIMED_OUT
    assert error["message"] == "Timed out: sleep did not finish within 0.05s"
    assert record(answer)["outcome"] == {"status": "error", "code": jsonrpc.TIMED_OUT,
                                         "message": error["message"]}


def test_a_call_with_arguments_that_are_not_an_object_answers_minus_32602():
    answer = run(handler(), "alice", call("echo", ["not", "an", "object"]))
    assert orjson.loads(answer.reply)["error"]["code"] == jsonrpc.INVALID_PARAMS


def with_audit(answer: str, scenario: Any) -> None:
    """Run ``scenario(link, writer)`` with an AuditLink to an audit writer that answers
    ``answer`` ("ack" or "nack")."""
    async def main() -> None:
        ctx: zmq.Context[Any] = zmq.Context()
        writer = AuditWriter(ctx, where, answer)
        link = AuditLink(ctx, where, "gateway-0#1", durable=True, timeout=5.0, capacity=10)
        try:
            await scenario(link, writer)
        finally:
            link.close()
            writer.close()
            ctx.destroy(linger=0)
    with short_endpoint() as where:
        asyncio.run(main())


def test_a_tool_with_effects_starts_only_once_its_intent_is_durable_and_the_record_names_it():
    async def scenario(link: AuditLink, writer: AuditWriter) -> None:
        h = handler(audit=link)
        begun = begin(h, "bob", call("sleep", {"seconds": 0}))
        assert isinstance(begun, Pending)
        recorded_when_started: list[list[str]] = []
        answer = await h.finish(begun, started=lambda: recorded_when_started.append(
            writer.kinds()))
        assert recorded_when_started == [["intent"]]
        (intent,) = writer.records()
        assert intent["args"] == {"seconds": 0}
        kept = record(answer)
        assert kept["intent"] == intent["id"]
        assert "args" not in kept  # once is enough: the intent has them
        assert kept["args_sha256"] == intent["args_sha256"]
    with_audit("ack", scenario)


def test_a_tool_whose_intent_the_audit_log_refuses_never_starts_and_answers_minus_32017():
    async def scenario(link: AuditLink, writer: AuditWriter) -> None:
        h = handler(audit=link)
        begun = begin(h, "bob", call("sleep", {"seconds": 0}))
        assert isinstance(begun, Pending)
        started: list[bool] = []
        answer = await h.finish(begun, started=lambda: started.append(True))
        assert started == []
        error = orjson.loads(answer.reply)["error"]
        assert error["code"] == jsonrpc.AUDIT_UNAVAILABLE and "disk full" in error["message"]
        assert answer.audit_failed  # the worker then does not wait on this record too
    with_audit("nack", scenario)
