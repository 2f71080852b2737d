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
import inspect
import logging
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from types import CoroutineType
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
    waiting, cancels = _cancels()
    try:
        # wait_for, not asyncio.timeout: a call's first steps may run inside another task
        # (worker.call_tasks.step), which asyncio.timeout would bind to and cancel
        verdict = await asyncio.wait_for(_resume(hook, pending, slot, seq, deadline, label),
                                         max(deadline - time.monotonic(), 0.0))
    except TimeoutError:
        return _overran(hosted)
    except HookOverrun:
        return _interrupted(hosted)
    except Exception as exc:
        return _failed(hosted, exc)
    # On Python 3.11 wait_for swallows a cancellation of the call (its request timeout,
    # its agent gone) that comes in the loop turn where the hook ends; the task still
    # counts it.  One requested while waiting, and not heard, is raised here.
    task, now = _cancels()
    if task is not None and now > (cancels if task is waiting else 0):
        raise asyncio.CancelledError
    return verdict


def _cancels() -> tuple[asyncio.Task[Any] | None, int]:
    """The current task and how many cancellations of it are pending or being handled."""
    task = asyncio.current_task()
    return task, (task.cancelling() if task is not None else 0)


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


# One entry per hook that decided something: (plugin, version, hook, verdict, reason,
# seconds); the audit record lists them, so an auditor sees which version of which rule
# decided.  A pass in which every hook let the value through unchanged (most calls) is
# one entry, its Pass, instead of an entry per hook (see entries()).
Entry = tuple[str, str, str, str, str | None, float]
Trail = list["Entry | Pass"]


class Passes(list["Entry | Pass"]):
    """A trail that takes a pass in which every hook allowed as one entry, its Pass (the
    tool call record's; a plain list gets every hook's entry with its time, as LLM and
    A2A records list them)."""


class Pass:
    """One hook of a chain version for one kind of call: what the runner needs of each
    plugin that has it, made once per chain, not per call (a swap makes a new chain
    tuple, so (chain, hook name, kind) names it)."""

    __slots__ = ("allowed", "chain", "entries", "hook", "hooks", "seconds", "sync")

    def __init__(self, chain: tuple[Hosted, ...], hook_name: str, kind: str) -> None:
        self.chain = chain
        self.hook = hook_name
        # (plugin, bound hook, its name as the call slot holds it, budget)
        self.hooks = tuple(
            (hosted, hook, hosted.name.encode()[:32], hosted.budget)
            for hosted in chain
            if (hook := getattr(hosted.plugin, hook_name, None)) is not None
            and kind in hosted.plugin.hook_kinds.get(hook_name, (kind,)))
        # each hook's entry when it allowed (its time goes to ``seconds``, for metrics)
        self.entries: tuple[Entry, ...] = tuple(
            (h.name, str(h.version), hook_name, "allow", None, 0.0) for h, *_ in self.hooks)
        self.allowed = {name: version for name, version, *_ in self.entries}  # the record's
        # the time each hook took while it allowed, summed until metrics take it
        self.seconds = [0.0] * len(self.hooks)
        # every hook a plain function: a call may run this pass without a coroutine
        self.sync = not any(inspect.iscoroutinefunction(h) for _, h, *_ in self.hooks)

    def take_seconds(self) -> list[tuple[str, float]]:
        """(plugin, seconds) its allowing hooks took since the last take."""
        seconds = self.seconds  # in place: a call in flight holds this list
        spent = [(e[0], s) for e, s in zip(self.entries, seconds, strict=True) if s]
        seconds[:] = [0.0] * len(seconds)
        return spent


def entries(trail: Trail) -> Iterator[Entry]:
    """Every hook's entry of a trail, a Pass's in full."""
    for entry in trail:
        if isinstance(entry, Pass):
            yield from entry.entries
        else:
            yield entry


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


_passes: dict[tuple[int, str, str], Pass] = {}


def _pass(chain: tuple[Hosted, ...], hook_name: str, kind: str) -> Pass:
    found = _passes.get((id(chain), hook_name, kind))
    if found is not None and found.chain is chain:
        return found
    made = Pass(chain, hook_name, kind)
    if len(_passes) > 64:  # chains of past swaps
        _passes.clear()
    _passes[(id(chain), hook_name, kind)] = made
    return made


def passes() -> list[Pass]:
    """The passes of the chains in use (metrics take their hooks' time)."""
    return list(_passes.values())


async def _through(chain: tuple[Hosted, ...], hook_name: str, value: Any, rewrites: type,
                   first: Call | None, call: Call, trail: Trail | None,
                   slot: CallSlot | None, seq: int, redacted: list[Any] | None = None) -> Any:
    """Run one hook of every plugin in order: a Deny ends it (unless permissive), a value
    of type ``rewrites`` replaces what the next plugin sees, None passes it on.
    ``first``: an argument each hook gets before the value (after_call's call).

    Each hook runs under its plugin's time budget; one that raises, overruns or returns
    nonsense denies the call (fail closed).  A hook may be a plain function (called,
    nothing more) or a coroutine function: its coroutine is started here, inline, since
    most never await (see _suspended for those that do).  While a hook's own code runs,
    the call slot says so, with its deadline: the master interrupts it there if it
    overruns (HookOverrun), or replaces the worker if it cannot be interrupted.
    """
    run = _pass(chain, hook_name, call.kind)
    seconds = run.seconds
    # every hook so far allowed, and the trail takes the Pass for them: no entry yet
    quiet = trail is None or type(trail) is Passes
    clock = time.monotonic
    now = clock()  # one reading per hook: where one hook ends, the next starts
    i = -1
    try:
        for hosted, hook, label, budget in run.hooks:
            i += 1
            started = now
            judged = False  # a verdict of the runner's own (failed, interrupted, awaited)
            try:
                if slot is not None:  # re-armed from one hook to the next, idled at the end
                    slot.arm(seq, started + budget, label)
                verdict = hook(value) if first is None else hook(first, value)
                if type(verdict) is CoroutineType:  # an async hook: run to its first await
                    coro = verdict
                    pending = coro.send(None)
                    _idle(slot)  # the loop runs other calls while this hook waits
                    verdict = await _suspended(hosted, coro, pending, slot, seq, started,
                                               label)
                    judged = True  # under a timeout of what was left of its budget
            except StopIteration as done:  # an async hook that never awaited
                verdict = done.value
            except HookOverrun:
                _idle(slot)
                verdict = _interrupted(hosted)
                judged = True
            except Exception as exc:
                _idle(slot)
                verdict = _failed(hosted, exc)
                judged = True
            now = clock()
            took = now - started
            if verdict is None and took <= budget:
                # the common case: on to the next hook, which re-arms the slot.  Only
                # this module's code runs meanwhile, where the slot's interrupt never
                # raises (call_slot._BOOKKEEPING)
                if quiet:
                    seconds[i] += took  # metrics take it from the Pass
                else:
                    trail.append((hosted.name, run.entries[i][1], hook_name, "allow",  # type: ignore[union-attr]
                                  None, took))
                continue
            _idle(slot)
            if took > budget and not judged:
                verdict = _overran(hosted)
            value, ended = _decide(run, i, verdict, took, value, rewrites, call,
                                   None if trail is None else (trail, quiet), redacted)
            if ended:
                return value
            quiet = trail is None
    finally:
        _idle(slot)
    if quiet and trail is not None and run.hooks:
        trail.append(run)
    return value


def _decide(run: Pass, i: int, verdict: Any, took: float, value: Any, rewrites: type,
            call: Call, trail: tuple[Trail, bool] | None,
            redacted: list[Any] | None) -> tuple[Any, bool]:
    """What the verdict of hook ``i`` does, when it is not a timely allow: (what the next
    hook sees, False), or (the denial result, True).  ``trail``: with whether the hooks
    before this one are still only in the Pass (they are listed now)."""
    hosted = run.hooks[i][0]
    hook_name = run.hook
    note: Callable[[Any], None] = _ignore
    if trail is not None:
        entries, quiet = trail
        if quiet:  # the hooks before this one allowed (their time is in the Pass's seconds)
            entries.extend(run.entries[:i])
        note = entries.append
    version = run.entries[i][1]
    if verdict is None:  # allowed, after it was awaited
        note((hosted.name, version, hook_name, "allow", None, took))
    elif isinstance(verdict, Deny):
        if _enforced(hosted, verdict, call):
            note((hosted.name, version, hook_name, "deny", verdict.reason, took))
            if redacted is not None and verdict.redacted is not None:
                redacted.append(verdict.redacted)
            return denied(hosted, verdict.reason, verdict.kind), True
        note((hosted.name, version, hook_name, "would_deny", verdict.reason, took))
    elif isinstance(verdict, rewrites):
        note((hosted.name, version, hook_name, "rewrite", None, took))
        return verdict, False
    else:
        reason = f"plugin {hosted.name} returned {type(verdict).__name__} from {hook_name}"
        note((hosted.name, version, hook_name, "deny", reason, took))
        return denied(hosted, reason, "guardrail"), True
    return value, False


_now: dict[tuple[int, str], tuple[tuple[Hosted, ...], tuple[Pass, Pass] | None]] = {}


def passes_now(chain: tuple[Hosted, ...], kind: str) -> tuple[Pass, Pass] | None:
    """The before and after passes of a call of this kind, when every hook in them is a
    plain function: then the whole call may run without a coroutine (before_now,
    after_now); None when one is a coroutine function."""
    found = _now.get((id(chain), kind))
    if found is not None and found[0] is chain:
        return found[1]
    first, then = _pass(chain, "before_call", kind), _pass(chain, "after_call", kind)
    both = (first, then) if first.sync and then.sync else None
    if len(_now) > 64:  # chains of past swaps
        _now.clear()
    _now[(id(chain), kind)] = (chain, both)
    return both


def before_now(passes: tuple[Pass, Pass], call: Call, trail: Trail | None = None,
               slot: CallSlot | None = None, seq: int = 0,
               redacted: list[Any] | None = None) -> Call | dict[str, Any]:
    """before(), run at once, for the passes of passes_now."""
    result: Call | dict[str, Any] = _through_now(passes[0], call, Call, None, call, trail,
                                                 slot, seq, redacted)
    return result


def after_now(passes: tuple[Pass, Pass], call: Call, result: dict[str, Any],
              trail: Trail | None = None, slot: CallSlot | None = None,
              seq: int = 0) -> dict[str, Any]:
    """after(), run at once, for the passes of passes_now."""
    out: dict[str, Any] = _through_now(passes[1], result, dict, call, call, trail, slot, seq)
    return out


def _through_now(run: Pass, value: Any, rewrites: type, first: Call | None, call: Call,
                 trail: Trail | None, slot: CallSlot | None, seq: int,
                 redacted: list[Any] | None = None) -> Any:
    """_through without a coroutine of its own, for hooks that are plain functions.  One
    that returns a coroutine anyway has it run here; if that waits, it fails closed (a
    hook that awaits must be ``async def``)."""
    hook_name = run.hook
    seconds = run.seconds
    quiet = trail is None or type(trail) is Passes
    clock = time.monotonic
    now = clock()
    i = -1
    try:
        for hosted, hook, label, budget in run.hooks:
            i += 1
            started = now
            judged = False
            try:
                if slot is not None:
                    slot.arm(seq, started + budget, label)
                verdict = hook(value) if first is None else hook(first, value)
                if type(verdict) is CoroutineType:
                    coro = verdict
                    coro.send(None)
                    coro.close()
                    _idle(slot)
                    verdict = Deny(f"plugin {hosted.name} waited in {hook_name}, which is "
                                   "not async def", "guardrail")
                    judged = True
            except StopIteration as done:
                verdict = done.value
            except HookOverrun:
                _idle(slot)
                verdict = _interrupted(hosted)
                judged = True
            except Exception as exc:
                _idle(slot)
                verdict = _failed(hosted, exc)
                judged = True
            now = clock()
            took = now - started
            if verdict is None and took <= budget:
                if quiet:
                    seconds[i] += took
                else:
                    trail.append((hosted.name, run.entries[i][1], hook_name, "allow",  # type: ignore[union-attr]
                                  None, took))
                continue
            _idle(slot)
            if took > budget and not judged:
                verdict = _overran(hosted)
            value, ended = _decide(run, i, verdict, took, value, rewrites, call,
                                   None if trail is None else (trail, quiet), redacted)
            if ended:
                return value
            quiet = trail is None
    finally:
        _idle(slot)
    if quiet and trail is not None and run.hooks:
        trail.append(run)
    return value


def _ignore(_entry: Any) -> None:
    pass


def _idle(slot: CallSlot | None) -> None:
    if slot is not None:
        slot.idle()
