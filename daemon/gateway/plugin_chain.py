"""How a call runs through the guardrail and policy plugins of a gateway worker.

The chain is an immutable tuple sorted by (priority, name), taken as it is when a call
starts, so a swap never changes a call in flight.  Each hook runs under its plugin's
time budget; one that raises, overruns or returns nonsense denies the call (fail closed),
and one stuck in a loop is interrupted where it is (see ipc.call_slot).  Hosting the
versions and swapping them is plugin_host's job.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from daemon.ipc.call_slot import CallSlot, HookOverrun
from daemon.plugin import Call, Deny, Plugin
from daemon.protocol import mcp

log = logging.getLogger("plugins")


@dataclass
class Hosted:
    name: str
    version: int | str
    priority: int
    sha256: str
    mode: str  # "enforce" | "permissive" (denials logged, not enforced)
    budget: float  # seconds per hook call
    plugin: Plugin


def denied(by: Hosted, reason: str, kind: str) -> dict[str, Any]:
    """A spec-shaped denial: a normal result with isError, readable by the model."""
    result = mcp.text_result(f"Denied by {by.name}: {reason}", is_error=True)
    result["_meta"] = {mcp.META_DENIED: {"by": by.name, "version": by.version,
                                         "reason": reason, "kind": kind}}
    return result


async def _suspended(hosted: Hosted, hook: Coroutine[Any, Any, Any], pending: Any,
                     slot: CallSlot | None, seq: int, started: float, label: bytes) -> Any:
    """The rest of a hook that suspended, under a timeout for what is left of its budget.

    Hooks are started eagerly (see _through): most never await, and for them a timer per
    hook (asyncio.timeout) was a quarter of the worker's time.
    """
    deadline = started + hosted.budget
    try:
        return await asyncio.wait_for(_resume(hook, pending, slot, seq, deadline, label),
                                      max(deadline - time.monotonic(), 0.0))
    except TimeoutError:
        return _overran(hosted)
    except HookOverrun:
        return _interrupted(hosted)
    except Exception as exc:
        return _failed(hosted, exc)


def _step(hook: Coroutine[Any, Any, Any], slot: CallSlot | None, seq: int, deadline: float,
          plugin: bytes) -> Any:
    """Run the hook up to its next suspension, with the call slot armed meanwhile."""
    if slot is None:
        return hook.send(None)
    try:
        slot.arm(seq, deadline, plugin)
        return hook.send(None)
    finally:
        slot.idle()


async def _resume(hook: Coroutine[Any, Any, Any], pending: Any, slot: CallSlot | None,
                  seq: int, deadline: float, plugin: bytes) -> Any:
    """Drive a coroutine that was started by hand, as a Task would."""
    try:
        while True:
            if pending is None:
                await asyncio.sleep(0)  # a bare yield: give the loop a turn
            else:
                # what a Task does with a yielded future: clear the flag, then wait on it
                pending._asyncio_future_blocking = False
                with contextlib.suppress(Exception):
                    await pending  # its outcome reaches the hook when it resumes
            pending = _step(hook, slot, seq, deadline, plugin)
    except StopIteration as done:
        return done.value
    except asyncio.CancelledError:
        hook.close()
        raise


def _overran(hosted: Hosted) -> Deny:
    return Deny(f"plugin {hosted.name} overran its {hosted.budget * 1000:g} ms budget",
                "guardrail")


def _interrupted(hosted: Hosted) -> Deny:
    log.warning("plugin %s v%s overran its %g ms budget and was interrupted", hosted.name,
                hosted.version, hosted.budget * 1000)
    return Deny(f"plugin {hosted.name} overran its {hosted.budget * 1000:g} ms budget "
                "(interrupted)", "guardrail")


def _failed(hosted: Hosted, exc: Exception) -> Deny:
    log.warning("plugin %s v%s raised %s: %s", hosted.name, hosted.version,
                exc.__class__.__name__, exc)
    return Deny(f"plugin {hosted.name} failed ({exc.__class__.__name__})", "guardrail")


def _enforced(hosted: Hosted, verdict: Deny, call: Call) -> bool:
    if hosted.mode == "permissive":
        log.warning("plugin %s v%s would deny %s calling %s (permissive, not enforced): %s",
                    hosted.name, hosted.version, call.agent, call.tool, verdict.reason)
        return False
    return True


# One entry per hook that ran: (plugin, version, hook, verdict, reason, seconds); the
# audit record lists them, so an auditor sees which version of which rule decided.
Trail = list[tuple[str, str, str, str, str | None, float]]


# before and after hand back _through's coroutine itself: a coroutine of their own
# around it would be one more frame to enter and leave, twice per call.

def before(chain: tuple[Hosted, ...], call: Call, trail: Trail | None = None,
           slot: CallSlot | None = None, seq: int = 0,
           redacted: list[Any] | None = None) -> Coroutine[Any, Any, Call | dict[str, Any]]:
    """The call as the chain lets it through (maybe rewritten), or a denial result
    (then ``redacted`` gets what the denying plugin said the audit may keep, if any)."""
    return _through(chain, "before_call", call, Call, None, call, trail, slot, seq, redacted)


def after(chain: tuple[Hosted, ...], call: Call, result: dict[str, Any],
          trail: Trail | None = None, slot: CallSlot | None = None,
          seq: int = 0) -> Coroutine[Any, Any, dict[str, Any]]:
    """The result as the chain lets it through (maybe rewritten), or a denial result."""
    return _through(chain, "after_call", result, dict, call, call, trail, slot, seq)


# What _through needs of each plugin that has a hook: its bound hook, its version as the
# record writes it, its name as the call slot holds it, its name and its budget.  Made
# once per chain, not per call: a swap makes a new chain tuple, so (chain, hook name)
# names it.
Hooks = tuple[tuple[Hosted, Callable[..., Any], str, bytes, str, float], ...]
_hooks_of: dict[tuple[int, str, str], tuple[tuple[Hosted, ...], Hooks]] = {}


def _hooks(chain: tuple[Hosted, ...], hook_name: str, kind: str) -> Hooks:
    found = _hooks_of.get((id(chain), hook_name, kind))
    if found is not None and found[0] is chain:
        return found[1]
    hooks = tuple((hosted, hook, str(hosted.version), hosted.name.encode()[:32],
                   hosted.name, hosted.budget)
                  for hosted in chain
                  if (hook := getattr(hosted.plugin, hook_name, None)) is not None
                  and kind in hosted.plugin.hook_kinds.get(hook_name, (kind,)))
    if len(_hooks_of) > 64:  # chains of past swaps
        _hooks_of.clear()
    _hooks_of[(id(chain), hook_name, kind)] = (chain, hooks)
    return hooks


async def _through(chain: tuple[Hosted, ...], hook_name: str, value: Any, rewrites: type,
                   first: Call | None, call: Call, trail: Trail | None,
                   slot: CallSlot | None, seq: int, redacted: list[Any] | None = None) -> Any:
    """Run one hook of every plugin in order: a Deny ends it (unless permissive), a value
    of type ``rewrites`` replaces what the next plugin sees, None passes it on.
    ``first``: an argument each hook gets before the value (after_call's call).

    Each hook runs under its plugin's time budget; one that raises, overruns or returns
    nonsense denies the call (fail closed).  The hook is started here, inline: most never
    await (see _suspended for those that do).  While its own code runs, the call slot says
    so, with its deadline: the master interrupts it there if it overruns (HookOverrun), or
    replaces the worker if it cannot be interrupted.
    """
    note = trail.append if trail is not None else _ignore
    clock = time.monotonic
    now = clock()  # one reading per hook: where one hook ends, the next starts
    try:
        for hosted, hook, version, label, name, budget in _hooks(chain, hook_name, call.kind):
            started = now
            try:
                if slot is not None:  # re-armed from one hook to the next, idled at the end
                    slot.arm(seq, started + budget, label)
                coro = hook(value) if first is None else hook(first, value)
                pending = coro.send(None)  # a hook that is not a coroutine fails here
            except StopIteration as done:
                now = clock()
                took = now - started
                verdict = done.value
                if verdict is None and took <= budget:
                    # the common case: on to the next hook, which re-arms the slot.  Only
                    # this module's code runs meanwhile, where the slot's interrupt never
                    # raises (call_slot._BOOKKEEPING)
                    note((name, version, hook_name, "allow", None, took))
                    continue
                _idle(slot)
                if took > budget:
                    verdict = _overran(hosted)
            except HookOverrun:
                _idle(slot)
                verdict = _interrupted(hosted)
                now = clock()
                took = now - started
            except Exception as exc:
                _idle(slot)
                verdict = _failed(hosted, exc)
                now = clock()
                took = now - started
            else:
                _idle(slot)  # the loop runs other calls while this hook waits
                verdict = await _suspended(hosted, coro, pending, slot, seq, started, label)
                now = clock()
                took = now - started
            if verdict is None:
                note((hosted.name, version, hook_name, "allow", None, took))
            elif isinstance(verdict, Deny):
                if _enforced(hosted, verdict, call):
                    note((hosted.name, version, hook_name, "deny", verdict.reason, took))
                    if redacted is not None and verdict.redacted is not None:
                        redacted.append(verdict.redacted)
                    return denied(hosted, verdict.reason, verdict.kind)
                note((hosted.name, version, hook_name, "would_deny", verdict.reason, took))
            elif isinstance(verdict, rewrites):
                note((hosted.name, version, hook_name, "rewrite", None, took))
                value = verdict
            else:
                reason = (f"plugin {hosted.name} returned {type(verdict).__name__} from "
                          f"{hook_name}")
                note((hosted.name, version, hook_name, "deny", reason, took))
                return denied(hosted, reason, "guardrail")
    finally:
        _idle(slot)
    return value


def _ignore(_entry: Any) -> None:
    pass


def _idle(slot: CallSlot | None) -> None:
    if slot is not None:
        slot.idle()
