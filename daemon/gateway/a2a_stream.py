"""A streamed A2A answer (SendStreamingMessage, SubscribeToTask) on its way from the
peer to the agent.

Each SSE event is one JSON-RPC response whose result is a Task, a Message, a status
update or an artifact update.  Per event, before it is passed on: the task and context
it names are claimed for the agent (an event naming another agent's task ends the
stream with TaskNotFound), its state is noted for the audit record, and every part text
goes through the on_chunk hooks of the plugins that see "a2a" calls (each part whole:
final=True), so a secret in a streamed part is redacted like one in a whole answer.  A
guardrail's Deny, or a stream that breaks off, ends the stream with a JSON-RPC error
event: a stream never just stops as if it were complete.  The final event (a Message,
or a terminal or interrupted state) is held back and sent as the stream's end, after
the audit record, like a tool call's answer: a client that hangs up once it has it got
a whole answer, and the record says ok.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

import orjson

from daemon.a2a import binding
from daemon.a2a.binding import DENIED, PEER_FAILED, error, sse
from daemon.gateway.a2a_record import A2aTrace
from daemon.gateway.llm_stream import ChunkGuard
from daemon.plugin import Call

if TYPE_CHECKING:
    from daemon.gateway.a2a_calls import A2aCalls

MAX_EVENT_BYTES = 4 << 20


async def events(content: Any) -> AsyncIterator[bytes]:
    """The data of each SSE event (multi-line data joined, comments skipped)."""
    pending = b""
    async for chunk in content.iter_any():
        pending += chunk
        if len(pending) > MAX_EVENT_BYTES and b"\n\n" not in pending:
            raise ValueError(f"an event larger than {MAX_EVENT_BYTES} bytes")
        while True:
            cut = _boundary(pending)
            if cut is None:
                break
            block, pending = pending[:cut[0]], pending[cut[1]:]
            data = _data(block)
            if data is not None:
                yield data
    data = _data(pending)
    if data is not None:
        yield data


def _boundary(buffer: bytes) -> tuple[int, int] | None:
    found = [(i, i + len(sep)) for sep in (b"\r\n\r\n", b"\n\n") if (i := buffer.find(sep)) >= 0]
    return min(found) if found else None


def _data(block: bytes) -> bytes | None:
    lines = [line[5:].removeprefix(b" ") for line in block.replace(b"\r\n", b"\n").split(b"\n")
             if line.startswith(b"data:")]
    return b"\n".join(lines) if lines else None


async def relay_events(calls: A2aCalls, trace: A2aTrace, chain: tuple[Any, ...], call: Call,
                       rid: Any, content: Any, send: Callable[[bytes], None]) -> bytes:
    """Pass the peer's events on (``send``); returns the stream's last bytes (the final
    event, held back, or an error event)."""
    guard = ChunkGuard(chain, call)
    held = b""  # the final event, sent as the end (after the record)
    try:
        async for data in events(content):
            try:
                event = orjson.loads(data)
            except orjson.JSONDecodeError:
                continue  # not an event of the binding: nothing an agent could read
            if not isinstance(event, dict):
                continue
            if "error" in event:  # the peer's own error: passed on, and the end
                failed = event["error"] if isinstance(event["error"], dict) else {}
                trace.outcome = {"status": "error", "code": failed.get("code"),
                                 "message": str(failed.get("message"))[:300]}
                return held + sse(data)
            result = event.get("result")
            task, context, state = binding.named_ids(result)
            trace.saw(task, context, state)
            if not calls.claim(trace.peer, call.agent, task, context):
                trace.outcome = {"status": "denied", "by": "ownership"}
                return held + sse(binding.task_not_found(rid))
            passed = await _guarded(guard, result)
            if isinstance(passed, tuple):
                hosted, deny = passed
                trace.outcome = {"status": "denied", "by": hosted.name, "reason": deny.reason}
                guard.note(trace.trail)
                return held + sse(error(rid, DENIED, f"Denied by {hosted.name}: "
                                        f"{deny.reason}", {"by": hosted.name,
                                                           "reason": deny.reason,
                                                           "kind": deny.kind}))
            if calls.content != "none":
                trace.reply.extend(binding.texts(passed))
            if held:  # a peer that goes on after its final event: pass that one on now
                send(held)
            out = sse(data if passed is result else orjson.dumps({**event, "result": passed}))
            held = out if binding.is_final(result, state) else b""
            if not held:
                send(out)
    except Exception as exc:  # a timeout, a broken connection: never a silent end
        guard.note(trace.trail)
        why = f"the stream broke off ({exc.__class__.__name__})"
        trace.outcome = {"status": "peer_error", "message": why}
        return held + sse(error(rid, PEER_FAILED, f"A2A agent {trace.peer} failed: {why}",
                                {"peer": trace.peer}))
    guard.note(trace.trail)
    return held


async def _guarded(guard: ChunkGuard, result: Any) -> Any:
    """The result with each part text as the on_chunk hooks pass it, or (plugin, Deny)."""
    if not guard.hooks:
        return result
    passed: dict[str, str] = {}
    for text in binding.texts(result):
        if text in passed:
            continue
        verdict = await guard.pass_text(0, text, True)
        if isinstance(verdict, tuple):
            return verdict
        passed[text] = verdict
    return binding.map_parts(result, lambda text: passed.get(text, text))
