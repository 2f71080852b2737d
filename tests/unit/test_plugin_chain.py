"""The plugin chain runner on its own: real plugins (classes here, or files' bytes loaded
by PluginHost), a real CallSlot file, and a real SIGUSR2 as the master would send it."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from daemon.gateway import plugin_chain
from daemon.gateway.plugin_chain import Hosted, Trail
from daemon.gateway.plugin_host import PluginHost
from daemon.ipc.call_slot import INTERRUPT_SIGNAL, CallSlot
from daemon.plugin import Call, Deny, Plugin
from daemon.protocol import mcp

CALL = Call("alice", ("reader",), "echo", {"text": "hi"})
RESULT = mcp.text_result("hi")


def hosted(plugin: Plugin, mode: str = "enforce", budget: float = 1.0) -> Hosted:
    return Hosted(plugin.name, plugin.version, plugin.priority, "0" * 64, mode, budget, plugin)


def before(*chain: Hosted, slot: CallSlot | None = None,
           redacted: list[Any] | None = None) -> tuple[Call | dict[str, Any], Trail]:
    trail: Trail = []
    out = asyncio.run(plugin_chain.before(chain, CALL, trail, slot, 7, redacted))
    return out, trail


def verdicts(trail: Trail) -> list[tuple[str, str, str]]:
    return [(plugin, hook, verdict) for plugin, _, hook, verdict, _, _ in trail]


def denial(out: Any) -> dict[str, Any]:
    assert isinstance(out, dict), f"not denied: {out!r}"
    return out["_meta"][mcp.META_DENIED]


class Tagger(Plugin):
    """Rewrites the arguments: appends its name to "seen"."""

    name = "tagger"

    def __init__(self, name: str = "tagger") -> None:
        super().__init__()
        self.name = name  # type: ignore[misc]

    async def before_call(self, call: Call) -> Call:
        return call.with_arguments({**call.arguments,
                                    "seen": [*call.arguments.get("seen", []), self.name]})

    async def after_call(self, call: Call, result: dict[str, Any]) -> dict[str, Any]:
        return {**result, "tagged_by": self.name}


class Refuser(Plugin):
    name = "refuser"

    async def before_call(self, call: Call) -> Deny:
        return Deny("not today", "policy", redacted={"text": "[masked]"})


class Raiser(Plugin):
    name = "raiser"

    async def before_call(self, call: Call) -> None:
        raise ValueError("a bug in the plugin")


class Sleeper(Plugin):
    name = "sleeper"

    async def before_call(self, call: Call) -> None:
        await asyncio.sleep(5)


class SyncHook(Plugin):
    """Plain-function hooks (no coroutine): deny a call whose text is "no", rewrite
    "shout", allow the rest."""

    name = "sync_hook"

    def before_call(self, call: Call) -> Call | Deny | None:
        if call.arguments.get("text") == "no":
            return Deny("said no")
        if call.arguments.get("text") == "shout":
            return call.with_arguments({"text": "SHOUT"})
        return None

    def after_call(self, call: Call, result: dict[str, Any]) -> None:
        return None


class SyncSpinner(Plugin):
    """A plain-function hook stuck in a Python loop."""

    name = "sync_spinner"

    def before_call(self, call: Call) -> None:
        while True:
            pass


class Quiet(Plugin):
    """Async hooks that let everything pass."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name  # type: ignore[misc]

    async def before_call(self, call: Call) -> None:
        return None

    async def after_call(self, call: Call, result: dict[str, Any]) -> None:
        return None


class Nonsense(Plugin):
    name = "nonsense"

    async def before_call(self, call: Call) -> int:
        return 42


class Spinner(Plugin):
    """A hook stuck in a pure-Python loop that even swallows exceptions."""

    name = "spinner"

    async def before_call(self, call: Call) -> None:
        spins = 0
        while True:
            try:
                spins += 1
            except Exception:
                spins = 0


def plugin_spec(name: str, priority: int) -> dict[str, Any]:
    """What the master sends a worker: a plugin file's bytes."""
    source = (f"from daemon.plugin import Plugin\n"
              f"class P(Plugin):\n"
              f"    name = {name!r}\n"
              f"    priority = {priority}\n"
              f"    async def before_call(self, call):\n"
              f"        seen = [*call.arguments.get('seen', []), {name!r}]\n"
              f"        return call.with_arguments({{**call.arguments, 'seen': seen}})\n"
              ).encode()
    return {"path": f"/plugins/{name}.py", "code": base64.b64encode(source).decode(),
            "sha256": hashlib.sha256(source).hexdigest()}


def test_hooks_run_by_priority_then_name_whatever_order_the_plugins_were_installed():
    host = PluginHost()
    host.install([plugin_spec("zeta", 10), plugin_spec("late", 90), plugin_spec("alpha", 10)])
    out, trail = before(*host.chain)
    assert isinstance(out, Call)
    assert out.arguments["seen"] == ["alpha", "zeta", "late"]
    assert [entry[0] for entry in trail] == ["alpha", "zeta", "late"]


def test_each_plugin_sees_the_rewrites_of_those_before_it_and_the_original_is_untouched():
    out, trail = before(hosted(Tagger("first")), hosted(Tagger("second")))
    assert isinstance(out, Call) and out.arguments["seen"] == ["first", "second"]
    assert CALL.arguments == {"text": "hi"}
    assert verdicts(trail) == [("first", "before_call", "rewrite"),
                               ("second", "before_call", "rewrite")]
    result = asyncio.run(plugin_chain.after((hosted(Tagger("first")),), CALL, RESULT))
    assert result["tagged_by"] == "first" and "tagged_by" not in RESULT


def test_a_denial_ends_the_chain_with_a_readable_result_and_hands_over_what_it_redacted():
    redacted: list[Any] = []
    out, trail = before(hosted(Refuser()), hosted(Tagger()), redacted=redacted)
    assert denial(out) == {"by": "refuser", "version": 1, "reason": "not today",
                           "kind": "policy"}
    assert out["isError"] is True and out["content"][0]["text"] == "Denied by refuser: not today"
    assert verdicts(trail) == [("refuser", "before_call", "deny")]  # tagger never ran
    assert redacted == [{"text": "[masked]"}]


def test_a_permissive_plugin_only_notes_that_it_would_deny_and_the_call_goes_on():
    out, trail = before(hosted(Refuser(), mode="permissive"), hosted(Tagger()))
    assert isinstance(out, Call) and out.arguments["seen"] == ["tagger"]
    assert verdicts(trail) == [("refuser", "before_call", "would_deny"),
                               ("tagger", "before_call", "rewrite")]
    assert trail[0][4] == "not today"


def test_a_hook_that_raises_fails_closed_and_names_its_plugin():
    out, trail = before(hosted(Raiser()), hosted(Tagger()))
    assert denial(out)["reason"] == "plugin raiser failed (ValueError)"
    assert verdicts(trail) == [("raiser", "before_call", "deny")]


def test_a_slow_async_hook_is_denied_once_it_overruns_its_budget():
    out, _ = before(hosted(Sleeper(), budget=0.05))
    assert denial(out)["reason"] == "plugin sleeper overran its 50 ms budget"


def test_a_hook_may_be_a_plain_function_and_its_verdicts_count_as_an_async_hooks_do():
    out, trail = before(hosted(SyncHook()), hosted(Tagger()))
    assert isinstance(out, Call) and out.arguments == {"text": "hi", "seen": ["tagger"]}
    assert verdicts(trail) == [("sync_hook", "before_call", "allow"),
                               ("tagger", "before_call", "rewrite")]
    shout = Call("alice", ("reader",), "echo", {"text": "shout"})
    rewritten = asyncio.run(plugin_chain.before((hosted(SyncHook()),), shout))
    assert isinstance(rewritten, Call) and rewritten.arguments == {"text": "SHOUT"}
    refused = Call("alice", ("reader",), "echo", {"text": "no"})
    trail = []
    out = asyncio.run(plugin_chain.before((hosted(SyncHook()), hosted(Tagger())), refused,
                                          trail))
    assert denial(out)["reason"] == "said no"
    assert verdicts(trail) == [("sync_hook", "before_call", "deny")]  # tagger never ran


def test_a_plain_function_hook_that_returns_a_coroutine_is_run_as_an_async_hook():
    class Wrapped(Plugin):
        name = "wrapped"

        def before_call(self, call: Call) -> Any:
            return Refuser().before_call(call)  # e.g. a decorator around an async hook

    out, _ = before(hosted(Wrapped()))
    assert denial(out)["reason"] == "not today"


def test_a_pass_in_which_every_hook_allowed_is_one_entry_of_a_compact_trail():
    chain = (hosted(SyncHook()), hosted(Quiet("quiet")))
    trail = plugin_chain.Passes()
    assert asyncio.run(plugin_chain.before(chain, CALL, trail)) is CALL
    assert asyncio.run(plugin_chain.after(chain, CALL, RESULT, trail)) is RESULT
    assert len(trail) == 2  # one per pass, not one per hook
    assert verdicts(list(plugin_chain.entries(trail))) == [
        ("sync_hook", "before_call", "allow"), ("quiet", "before_call", "allow"),
        ("sync_hook", "after_call", "allow"), ("quiet", "after_call", "allow")]
    # a hook that does something: the hooks before it are listed, each, as allowing
    tagged = plugin_chain.Passes()
    out = asyncio.run(plugin_chain.before((*chain, hosted(Tagger())), CALL, tagged))
    assert isinstance(out, Call)
    assert verdicts(list(plugin_chain.entries(tagged))) == [
        ("sync_hook", "before_call", "allow"), ("quiet", "before_call", "allow"),
        ("tagger", "before_call", "rewrite")]
    assert all(isinstance(entry, tuple) for entry in tagged)


def test_a_hook_that_returns_neither_a_rewrite_nor_a_deny_fails_closed():
    out, _ = before(hosted(Nonsense()))
    assert denial(out)["reason"] == "plugin nonsense returned int from before_call"


@pytest.fixture
def slot(tmp_path: Path) -> Iterator[CallSlot]:
    """A worker's call slot, with the worker's SIGUSR2 handler installed in this process."""
    slot = CallSlot.create(tmp_path / "gateway-0#1")
    previous = signal.signal(INTERRUPT_SIGNAL, slot.interrupt)
    yield slot
    signal.signal(INTERRUPT_SIGNAL, previous)
    slot.close(unlink=True)


@pytest.mark.timeout(10)
def test_a_hook_stuck_in_a_python_loop_is_interrupted_by_the_masters_signal(slot: CallSlot):
    seen: list[Any] = []
    done = threading.Event()

    def master() -> None:
        """Reads the slot like the master's watchdog; signals while the hook is overdue."""
        while not done.wait(0.05):
            running = slot.read()
            if running.seq:
                seen.append(running)
                os.kill(os.getpid(), INTERRUPT_SIGNAL)

    watchdog = threading.Thread(target=master, daemon=True)
    watchdog.start()
    try:
        out, trail = before(hosted(Spinner(), budget=0.05), hosted(Tagger()), slot=slot)
    finally:
        done.set()
        watchdog.join()
    assert denial(out)["reason"] == "plugin spinner overran its 50 ms budget (interrupted)"
    assert verdicts(trail) == [("spinner", "before_call", "deny")]
    assert slot.interrupted
    assert seen and (seen[0].seq, seen[0].plugin) == (7, "spinner")
    assert slot.read().seq == 0  # idle again: the worker is not running any call's code


@pytest.mark.timeout(10)
def test_a_plain_function_hook_stuck_in_a_loop_is_interrupted_too(slot: CallSlot):
    done = threading.Event()

    def master() -> None:
        while not done.wait(0.05):
            if slot.read().seq:
                os.kill(os.getpid(), INTERRUPT_SIGNAL)

    watchdog = threading.Thread(target=master, daemon=True)
    watchdog.start()
    try:
        out, trail = before(hosted(SyncSpinner(), budget=0.05), hosted(Tagger()), slot=slot)
    finally:
        done.set()
        watchdog.join()
    assert denial(out)["reason"] == ("plugin sync_spinner overran its 50 ms budget "
                                     "(interrupted)")
    assert verdicts(trail) == [("sync_spinner", "before_call", "deny")]
    assert slot.read().seq == 0


class LlmOnlyBefore(Plugin):
    """Sees tool and LLM calls, but its before_call only LLM requests (hook_kinds)."""

    name = "llm_only_before"
    kinds = frozenset({"tool", "llm"})
    hook_kinds = {"before_call": frozenset({"llm"})}

    async def before_call(self, call: Call) -> Deny:
        return Deny(f"before_call ran for a {call.kind} call")

    async def after_call(self, call: Call, result: dict[str, Any]) -> None:
        return None


def test_a_hook_is_not_run_for_the_kinds_its_hook_kinds_leave_out():
    chain = (hosted(LlmOnlyBefore()),)
    out, trail = before(*chain)
    assert out == CALL and trail == []  # a tool call: its before_call is not asked
    llm = Call("alice", ("reader",), "gpt", {"messages": []}, kind="llm")
    denied = asyncio.run(plugin_chain.before(chain, llm, []))
    assert denial(denied)["reason"] == "before_call ran for a llm call"
    after_trail: Trail = []
    assert asyncio.run(plugin_chain.after(chain, CALL, RESULT, after_trail)) == RESULT
    assert verdicts(after_trail) == [("llm_only_before", "after_call", "allow")]


def test_hook_kinds_that_name_an_unknown_hook_or_kind_are_refused():
    from daemon.hotswap.source import PluginSource, Refused, load_class

    def load(hook_kinds: str) -> type[Plugin]:
        code = ("from daemon.plugin import Plugin\n"
                f"class P(Plugin):\n    name = 'p'\n    hook_kinds = {hook_kinds}\n").encode()
        return load_class(PluginSource("p.py", code, hashlib.sha256(code).hexdigest()))
    assert load('{"before_call": {"llm"}}').hook_kinds == {"before_call": {"llm"}}
    for bad in ('{"before": {"llm"}}', '{"after_call": "llm"}', '{"before_call": {"llms"}}',
                '["before_call"]'):
        with pytest.raises(Refused, match="hook_kinds must map"):
            load(bad)


def test_the_bundled_chain_runs_a_tool_call_without_a_coroutine():
    from daemon.config import bundled_plugin_dirs

    specs = []
    for path in sorted(bundled_plugin_dirs()[0].glob("*.py")):
        source = path.read_bytes()
        specs.append({"path": str(path), "code": base64.b64encode(source).decode(),
                      "sha256": hashlib.sha256(source).hexdigest()})
    host = PluginHost()
    host.install(specs)
    chain = host.chain_for("tool")
    passes = plugin_chain.passes_now(chain, "tool")
    assert passes is not None  # every before and after hook is a plain function
    trail = plugin_chain.Passes()
    assert plugin_chain.before_now(passes, CALL, trail) is CALL
    assert plugin_chain.after_now(passes, CALL, RESULT, trail) is RESULT
    assert trail == list(passes)  # all allowed: one entry per pass


def test_a_call_cancelled_as_its_suspended_hook_ends_stays_cancelled():
    """The call's own cancellation (its request timeout, its agent gone) arriving in the
    loop turn where a hook that awaited ends is not swallowed: the call stops."""
    class Waits(Plugin):
        name = "waits"

        def __init__(self) -> None:
            super().__init__()
            self.gate: asyncio.Future[None] | None = None

        async def before_call(self, call: Call) -> None:
            self.gate = asyncio.get_running_loop().create_future()
            await self.gate

    async def main() -> str:
        plugin = Waits()
        call = asyncio.create_task(plugin_chain.before((hosted(plugin),), CALL, [], None, 7))
        while plugin.gate is None:
            await asyncio.sleep(0)
        plugin.gate.set_result(None)  # the hook ends in the next turn ...
        call.cancel()                 # ... and the call is cancelled in the same one
        try:
            await call
        except asyncio.CancelledError:
            return "cancelled"
        return "went on"

    assert asyncio.run(main()) == "cancelled"
