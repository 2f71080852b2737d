"""The A2A JSON-RPC binding as the gateway reads it (A2A v1.0; v0.3 names as aliases).

    method (v1.0)           v0.3 alias            forwarded   ids the gateway checks
    SendMessage             message/send          yes         message.taskId, contextId
    SendStreamingMessage    message/stream        yes (SSE)   message.taskId, contextId
    GetTask                 tasks/get             yes         id
    CancelTask              tasks/cancel          yes         id
    ListTasks               tasks/list            yes         contextId; result filtered
    SubscribeToTask         tasks/resubscribe     yes (SSE)   id
    *PushNotificationConfig tasks/pushNotificationConfig/*   no: -32003 (a push would
                                                             bypass the gateway)
    GetExtendedAgentCard    agent/getAuthenticatedExtendedCard  no: -32004

Results and stream events name their task in either version's shape: v1.0 wraps them
(``{"task": …}``, ``{"message": …}``, ``{"statusUpdate": …}``, ``{"artifactUpdate": …}``),
v0.3 tags them (``"kind": "task" | "message" | "status-update" | "artifact-update"``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import orjson

SEND, STREAM, GET, CANCEL, LIST, SUBSCRIBE = ("SendMessage", "SendStreamingMessage",
                                              "GetTask", "CancelTask", "ListTasks",
                                              "SubscribeToTask")
FORWARDED = frozenset({SEND, STREAM, GET, CANCEL, LIST, SUBSCRIBE})
STREAMING = frozenset({STREAM, SUBSCRIBE})
ALIASES = {"message/send": SEND, "message/stream": STREAM, "tasks/get": GET,
           "tasks/cancel": CANCEL, "tasks/list": LIST, "tasks/resubscribe": SUBSCRIBE}
PUSH_METHODS = frozenset({
    "CreateTaskPushNotificationConfig", "GetTaskPushNotificationConfig",
    "ListTaskPushNotificationConfigs", "DeleteTaskPushNotificationConfig",
    "tasks/pushNotificationConfig/set", "tasks/pushNotificationConfig/get",
    "tasks/pushNotificationConfig/list", "tasks/pushNotificationConfig/delete"})
CARD_METHODS = frozenset({"GetExtendedAgentCard", "agent/getAuthenticatedExtendedCard"})

# A2A error codes (a2a.utils.errors) and ours
TASK_NOT_FOUND = -32001
PUSH_NOT_SUPPORTED = -32003
UNSUPPORTED_OPERATION = -32004
DENIED = -32023  # ours: a policy or guardrail denied the message (data: by, reason, kind)
PEER_FAILED = -32024  # ours: the peer could not be reached, or broke off (data: peer)
VERSION_HEADER = "A2A-Version"


def canonical(method: str) -> str:
    return ALIASES.get(method, method)


def error(rid: Any, code: int, message: str, data: Any = None) -> bytes:
    body: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        body["data"] = data
    return orjson.dumps({"jsonrpc": "2.0", "id": rid, "error": body})


def sse(data: bytes) -> bytes:
    return b"data: " + data + b"\n\n"


def task_not_found(rid: Any) -> bytes:
    """A foreign task answers exactly like one that does not exist."""
    return error(rid, TASK_NOT_FOUND, "Task not found")


# -- the ids a request names ------------------------------------------------------------

def asked_ids(method: str, params: dict[str, Any]) -> tuple[str | None, str | None]:
    """(taskId, contextId) the request refers to, for the ownership check."""
    if method in (SEND, STREAM):
        message = params.get("message")
        if not isinstance(message, dict):
            return None, None
        return _str(message.get("taskId")), _str(message.get("contextId"))
    if method in (GET, CANCEL, SUBSCRIBE):
        return _str(params.get("id")), None
    if method == LIST:
        return None, _str(params.get("contextId"))
    return None, None


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


# -- the ids and states a result or event names ------------------------------------------

def unwrap(result: Any) -> tuple[str, dict[str, Any]] | None:
    """(kind, object) of a result or stream event: kind is task, message, status or
    artifact, whichever version's shape it has."""
    if not isinstance(result, dict):
        return None
    for key, kind in (("task", "task"), ("message", "message"), ("statusUpdate", "status"),
                      ("artifactUpdate", "artifact")):
        value = result.get(key)
        if isinstance(value, dict):
            return kind, value
    tag = result.get("kind")
    legacy = {"task": "task", "message": "message", "status-update": "status",
              "artifact-update": "artifact"}.get(tag) if isinstance(tag, str) else None
    if legacy is not None:
        return legacy, result
    if isinstance(result.get("id"), str) and isinstance(result.get("status"), dict):
        return "task", result  # GetTask / CancelTask answer the Task itself
    return None


# The states after which a peer ends a stream (terminal or interrupted), either version
FINAL_STATES = frozenset(("completed", "failed", "canceled", "rejected", "input_required",
                          "auth_required", "input-required", "auth-required"))


def is_final(result: Any, state: str | None) -> bool:
    """A stream event after which the peer ends the stream: a Message, or a task in a
    terminal or interrupted state."""
    found = unwrap(result)
    return (found is not None and found[0] == "message") or (
        state is not None and state.removeprefix("TASK_STATE_").lower() in FINAL_STATES)


def named_ids(result: Any) -> tuple[str | None, str | None, str | None]:
    """(taskId, contextId, state) a result or event carries."""
    found = unwrap(result)
    if found is None:
        return None, None, None
    kind, obj = found
    task = _str(obj.get("id")) if kind == "task" else _str(obj.get("taskId"))
    status = obj.get("status")
    state = status.get("state") if isinstance(status, dict) else None
    return task, _str(obj.get("contextId")), state if isinstance(state, str) else None


def listed_tasks(result: Any) -> list[Any] | None:
    """The tasks of a ListTasks result (v1.0 ``tasks``; a bare list in v0.3 drafts)."""
    if isinstance(result, dict) and isinstance(result.get("tasks"), list):
        return list(result["tasks"])
    if isinstance(result, list):
        return result
    return None


# -- message parts (what guardrails read and redact) --------------------------------------

Rewrite = Callable[[str], str]


def map_parts(value: Any, rewrite: Rewrite) -> Any:
    """``value`` with ``rewrite`` applied to the text of every part it carries (messages,
    artifacts, status messages, history; data parts' strings too); the same object when
    nothing changed."""
    if isinstance(value, list):
        out = [map_parts(v, rewrite) for v in value]
        return value if all(a is b for a, b in zip(out, value, strict=True)) else out
    if not isinstance(value, dict):
        return value
    changed: dict[str, Any] = {}
    for key, item in value.items():
        if key == "parts" and isinstance(item, list):
            new: Any = [_part(p, rewrite) for p in item]
            if all(a is b for a, b in zip(new, item, strict=True)):
                new = item
        elif isinstance(item, dict | list):
            new = map_parts(item, rewrite)
        else:
            continue
        if new is not item:
            changed[key] = new
    return {**value, **changed} if changed else value


def _part(part: Any, rewrite: Rewrite) -> Any:
    if not isinstance(part, dict):
        return part
    text = part.get("text")
    if isinstance(text, str):
        new = rewrite(text)
        return part if new is text or new == text else {**part, "text": new}
    data = part.get("data")
    if data is not None:  # v1.0: any JSON value; v0.3: {"kind": "data", "data": {...}}
        new_data = _strings(data, rewrite)
        return part if new_data is data else {**part, "data": new_data}
    return part


def _strings(value: Any, rewrite: Rewrite) -> Any:
    if isinstance(value, str):
        new = rewrite(value)
        return value if new == value else new
    if isinstance(value, list):
        out = [_strings(v, rewrite) for v in value]
        return value if all(a is b for a, b in zip(out, value, strict=True)) else out
    if isinstance(value, dict):
        items = {k: _strings(v, rewrite) for k, v in value.items()}
        return value if all(items[k] is value[k] for k in value) else items
    return value


def texts(value: Any) -> Iterator[str]:
    """Every part text ``value`` carries, in order."""
    found: list[str] = []

    def keep(text: str) -> str:
        found.append(text)
        return text
    map_parts(value, keep)
    return iter(found)


def reply_text(result: Any) -> str:
    """What an agent answered, as one text: a Message's parts, or a Task's artifacts and
    status message (the a2a__NAME tool's result)."""
    found = unwrap(result)
    if found is None:
        return ""
    kind, obj = found
    if kind == "message":
        return "".join(texts(obj))
    pieces = ["".join(texts(a)) for a in obj.get("artifacts") or [] if isinstance(a, dict)]
    status = obj.get("status")
    if not any(pieces) and isinstance(status, dict):
        pieces.append("".join(texts(status.get("message"))))
    return "\n".join(p for p in pieces if p)
