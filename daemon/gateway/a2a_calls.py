"""What a gateway worker does with one A2A request (ipc.messages A2A_CALL).

The master's HTTP front authenticated the agent and passed the JSON-RPC body on
untouched, with the caller's A2A-Version; here it is parsed once, then: the agent's
roles (``peers`` globs: a peer the roles hide answers 404, exactly like an unknown one),
the method (push-notification config: -32003; v0.3 names are aliases), task ownership
(a foreign or unknown task or context: TaskNotFound, as if it did not exist), a card
held for an admin, the plugin chain (``call.kind == "a2a"``, ``call.tool`` the peer,
``call.arguments`` the params: a denial answers -32023, a rewrite is what the peer
gets), the peer (no retries: a message may have effects), then the answer: ownership of
the task and context it names recorded first, after_call on a whole result, on_chunk on
the part texts of each streamed event (gateway.a2a_stream), and one audit record.
STARTED goes to the master just before the peer request: from then on a worker crash
fails the request instead of re-routing it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from fnmatch import fnmatchcase
from typing import Any

import orjson

from daemon import metrics
from daemon.a2a import binding
from daemon.a2a.binding import DENIED, PEER_FAILED, error
from daemon.a2a.peers import MAX_ANSWER_BYTES, Peer, PeerClient, PeerFailure
from daemon.a2a.tasks import TaskOwners, store_path
from daemon.audit.link import AuditLink
from daemon.gateway import plugin_chain
from daemon.gateway.a2a_record import A2aTrace
from daemon.gateway.a2a_stream import relay_events
from daemon.gateway.plugin_host import PluginHost
from daemon.ipc import messages
from daemon.ipc.call_slot import CallSlot
from daemon.plugin import Call
from daemon.protocol import jsonrpc, mcp

log = logging.getLogger("a2a")
JSON = {"Content-Type": "application/json"}
SSE = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}


class Answered(Exception):
    """The request is answered (``body``: a JSON-RPC response, or an HTTP error)."""

    def __init__(self, body: bytes, status: int = 200) -> None:
        super().__init__()
        self.body, self.status = body, status


class A2aCalls:
    def __init__(self, options: dict[str, Any], agent_roles: dict[str, tuple[str, ...]],
                 plugins: PluginHost, audit: AuditLink, worker: str, slot: CallSlot | None,
                 send: Callable[[bytes], None], send_now: Callable[[bytes], None],
                 learned: dict[str, Any] | None = None) -> None:
        self.plugins = plugins
        self.audit = audit
        self.worker = worker
        self.slot = slot
        self.send = send
        self.send_now = send_now
        self.client = PeerClient()
        self.owners: TaskOwners | None = None
        self.tally = metrics.A2aTally()
        self.apply(options, agent_roles, learned or {})

    def apply(self, options: dict[str, Any], agent_roles: dict[str, tuple[str, ...]],
              learned: dict[str, Any]) -> None:
        """Settings, and what the master learned of the peers' cards (endpoint, held)."""
        self.peers = {name: Peer.from_options(name, o, learned.get(name) or {})
                      for name, o in (options.get("peers") or {}).items()}
        self.learned = learned
        self.role_peers = {r: tuple(p) for r, p in (options.get("role_peers") or {}).items()}
        self.agent_roles = agent_roles
        self.content = str(options.get("content", "digest"))
        self.timeout = float(options.get("request_timeout", 300.0))
        if self.owners is None and options.get("state_dir"):
            self.owners = TaskOwners(store_path(options["state_dir"]))

    def may_message(self, agent: str, peer: str) -> bool:
        roles = self.agent_roles.get(agent, ())
        return "admin" in roles or any(fnmatchcase(peer, pattern) for role in roles
                                       for pattern in self.role_peers.get(role, ()))

    async def close(self) -> None:
        await self.client.close()
        if self.owners is not None:
            self.owners.close()

    # -- one request -------------------------------------------------------------------

    async def serve(self, seq: int, agent: str, method: str, raw: bytes) -> None:
        version, _, body = raw.partition(b"\n")
        trace = A2aTrace(self.worker, agent, method.removeprefix("a2a/"), self.content)
        try:
            async with asyncio.timeout(self.timeout):
                await self._serve(seq, agent, trace, version.decode(errors="replace"), body)
        except asyncio.CancelledError:  # the agent went away: the peer request too
            trace.outcome = {"status": "cancelled"}
            self.audit.submit(trace.record())
            raise
        except Answered as answer:
            self._finish(seq, trace, self._last(trace, answer.body, answer.status))
        except TimeoutError:
            trace.outcome = {"status": "error", "code": jsonrpc.TIMED_OUT}
            self._finish(seq, trace, self._last(trace, error(
                _rid(body), jsonrpc.TIMED_OUT, f"Timed out: no answer within "
                f"{self.timeout:g}s ([a2a] request_timeout)")))
        except Exception:
            log.exception("A2A request of %s to %s failed", agent, trace.peer)
            trace.outcome = {"status": "error", "code": jsonrpc.INTERNAL_ERROR}
            self._finish(seq, trace, self._last(trace, error(
                _rid(body), jsonrpc.INTERNAL_ERROR, "Internal error in the gateway")))

    @staticmethod
    def _last(trace: A2aTrace, body: bytes, status: int = 200) -> bytes:
        """The frame that ends a request: a whole answer, or a stream's error event."""
        if trace.streaming:
            return messages.LLM_END + binding.sse(body)
        return messages.pack_llm_head(status, JSON, body)

    def _finish(self, seq: int, trace: A2aTrace, frame: bytes) -> None:
        """Send the last frame once the record is durable (a stream's end, too)."""
        def durable(failed: str | None) -> None:
            last = frame
            if failed is not None and frame[:1] == messages.LLM_WHOLE:
                last = messages.pack_llm_head(200, JSON, error(
                    None, jsonrpc.AUDIT_UNAVAILABLE,
                    f"Audit unavailable: the request was not recorded ({failed})"))
            self.send(messages.pack_reply(seq, last))
        self.tally.request(trace)
        self.audit.submit(trace.record(), durable)

    async def _serve(self, seq: int, agent: str, trace: A2aTrace, version: str,
                     body: bytes) -> None:
        name = trace.peer
        peer = self.peers.get(name)
        if peer is None or not self.may_message(agent, name):
            if peer is not None:
                roles = self.agent_roles.get(agent, ())
                trace.trail.append(("roles", "-", "before_call", "deny",
                                    f"roles {', '.join(roles) or '(none)'} do not allow "
                                    f"peer {name}", 0.0))
                trace.outcome = {"status": "denied", "by": "roles", "http": 404}
            else:
                trace.outcome = {"status": "error", "http": 404}
            raise Answered(orjson.dumps({"error": {"status": 404, "message":
                                                   f"Unknown A2A agent: {name}"}}), 404)
        request, rid, method, params = _parse(body)
        trace.method, trace.params = method, params
        self._check_ownership(agent, trace, method, params, rid)
        if peer.held:
            trace.trail.append(("cards", "-", "before_call", "deny", "card held", 0.0))
            trace.outcome = {"status": "denied", "by": "cards"}
            raise Answered(error(rid, DENIED, f"Denied: A2A agent {name}'s card changed "
                                 "(skills or signature) and is held until an admin accepts "
                                 "it", {"by": "cards", "reason": "card held",
                                        "kind": "guardrail"}))
        chain = self.plugins.chain  # this request's chain, whatever a swap does meanwhile
        call = Call(agent, self.agent_roles.get(agent, ()), name, params, kind="a2a")
        if chain:
            redacted: list[Any] = []
            admitted = await plugin_chain.before(chain, call, trace.trail, self.slot, seq,
                                                 redacted)
            if isinstance(admitted, dict):
                trace.kept = redacted[0] if redacted else None
                raise _denial(admitted, trace, rid)
            if admitted.arguments is not params:
                trace.kept = admitted.arguments
                body = orjson.dumps({**request, "params": admitted.arguments})
            call = admitted
        self.send_now(messages.pack_started(seq))  # the peer may be at work from here
        try:
            response = await self.client.post(peer, body, version,
                                              method in binding.STREAMING)
        except PeerFailure as exc:
            raise self._peer_failed(trace, rid, str(exc)) from None
        try:
            if response.content_type == "text/event-stream":
                self.send(messages.pack_progress(seq, messages.pack_llm_head(200, SSE)))
                trace.streaming = True
                end = await relay_events(self, trace, chain, call, rid, response.content,
                                         lambda data: self.send(messages.pack_progress(
                                             seq, messages.LLM_DATA + data)))
                self._finish(seq, trace, messages.LLM_END + end)
            else:
                reply = await self._whole(trace, chain, call, rid, response)
                self._finish(seq, trace, messages.pack_llm_head(200, JSON, reply))
        finally:
            response.close()

    def _check_ownership(self, agent: str, trace: A2aTrace, method: str,
                         params: dict[str, Any], rid: Any) -> None:
        task, context = binding.asked_ids(method, params)
        owners = self.owners
        if owners is None or (task is None and context is None):
            return
        foreign = None
        if task is not None and owners.task_owner(trace.peer, task) != agent:
            foreign = f"task {task}"
        elif context is not None and owners.context_owner(trace.peer, context) not in (
                None, agent):
            foreign = f"context {context}"
        if foreign is None:
            return
        trace.trail.append(("ownership", "-", "before_call", "deny",
                            f"{foreign} is unknown or another agent's", 0.0))
        trace.outcome = {"status": "denied", "by": "ownership"}
        if method == binding.LIST:  # another's context: as if it had no tasks
            raise Answered(orjson.dumps({"jsonrpc": "2.0", "id": rid, "result": {
                "tasks": [], "nextPageToken": "", "pageSize": 0, "totalSize": 0}}))
        raise Answered(binding.task_not_found(rid))

    def _peer_failed(self, trace: A2aTrace, rid: Any, why: str) -> Answered:
        trace.outcome = {"status": "peer_error", "message": why}
        return Answered(error(rid, PEER_FAILED, f"A2A agent {trace.peer} failed: {why}",
                              {"peer": trace.peer}))

    async def _whole(self, trace: A2aTrace, chain: tuple[Any, ...], call: Call, rid: Any,
                     response: Any) -> bytes:
        body = await response.content.read(MAX_ANSWER_BYTES + 1)
        if len(body) > MAX_ANSWER_BYTES:
            raise self._peer_failed(trace, rid, "its answer is larger than "
                                                f"{MAX_ANSWER_BYTES} bytes")
        try:
            reply = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise self._peer_failed(trace, rid, f"HTTP {response.status}, not a JSON-RPC "
                                                "answer") from None
        if not isinstance(reply, dict) or ("result" not in reply and "error" not in reply):
            raise self._peer_failed(trace, rid, "not a JSON-RPC answer")
        if "error" in reply:  # the peer's own answer (its TaskNotFound, ...): passed on
            failed: dict[str, Any] = reply["error"] if isinstance(reply["error"], dict) else {}
            trace.outcome = {"status": "error", "code": failed.get("code"),
                             "message": str(failed.get("message"))[:300]}
            return bytes(body)
        result = reply["result"]
        rewritten = False
        if trace.method == binding.LIST:
            result, rewritten = self._owned_only(trace, call.agent, result)
        else:
            task, context, state = binding.named_ids(result)
            trace.saw(task, context, state)
            if not self.claim(trace.peer, call.agent, task, context):
                trace.outcome = {"status": "denied", "by": "ownership"}
                return binding.task_not_found(rid)
        if chain and isinstance(result, dict):
            given = result
            result = await plugin_chain.after(chain, call, result, trace.trail, self.slot)
            if result is not given:
                if mcp.META_DENIED in (result.get("_meta") or {}):
                    raise _denial(result, trace, rid)
                rewritten = True
        if self.content != "none":
            trace.reply = list(binding.texts(result))
        if not rewritten:
            return bytes(body)  # bytes travel untouched
        return orjson.dumps({"jsonrpc": "2.0", "id": reply.get("id", rid), "result": result})

    def claim(self, peer: str, agent: str, task: str | None, context: str | None) -> bool:
        if self.owners is None or (task is None and context is None):
            return True
        return self.owners.claim(peer, agent, task, context)

    def _owned_only(self, trace: A2aTrace, agent: str, result: Any) -> tuple[Any, bool]:
        """ListTasks: the agent's own tasks only."""
        tasks = binding.listed_tasks(result)
        if tasks is None or self.owners is None:
            return result, False
        mine = [t for t in tasks if isinstance(t, dict) and isinstance(t.get("id"), str)
                and self.owners.task_owner(trace.peer, t["id"]) == agent]
        if len(mine) == len(tasks):
            return result, False
        if isinstance(result, list):
            return mine, True
        filtered = {**result, "tasks": mine}
        if not result.get("nextPageToken"):
            filtered["totalSize"] = len(mine)
        else:
            filtered.pop("totalSize", None)
        return filtered, True


def _parse(body: bytes) -> tuple[dict[str, Any], Any, str, dict[str, Any]]:
    """(request, id, canonical method, params), or Answered with the JSON-RPC error."""
    try:
        request = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise Answered(error(None, jsonrpc.PARSE_ERROR, f"Parse error: {exc}")) from None
    if not isinstance(request, dict) or request.get("jsonrpc") != "2.0":
        raise Answered(error(None, jsonrpc.INVALID_REQUEST, "Invalid Request: not a "
                             "JSON-RPC 2.0 object (batches are not supported)"))
    rid = request.get("id")
    if not jsonrpc.valid_id(rid) and rid is not None:
        raise Answered(error(None, jsonrpc.INVALID_REQUEST, "Invalid Request: id must be a "
                             "string, an integer or null"))
    method = request.get("method")
    if not isinstance(method, str):
        raise Answered(error(rid, jsonrpc.INVALID_REQUEST, "Invalid Request: needs a string "
                             "method"))
    if method in binding.PUSH_METHODS:
        raise Answered(error(rid, binding.PUSH_NOT_SUPPORTED, "Push Notification is not "
                             "supported: the gateway does not let peers call agents back"))
    if method in binding.CARD_METHODS:
        raise Answered(error(rid, binding.UNSUPPORTED_OPERATION, "The extended agent card "
                             "is not available through the gateway"))
    canonical = binding.canonical(method)
    if canonical not in binding.FORWARDED:
        raise Answered(error(rid, jsonrpc.METHOD_NOT_FOUND, f"Method not found: {method}"))
    params = request.get("params", {})
    if not isinstance(params, dict):
        raise Answered(error(rid, jsonrpc.INVALID_PARAMS, "Invalid params: params must be "
                             "an object"))
    return request, rid, canonical, params


def _rid(body: bytes) -> Any:
    try:
        request = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    return request.get("id") if isinstance(request, dict) else None


def denial_error(result: dict[str, Any], rid: Any) -> tuple[bytes, dict[str, Any]]:
    """A plugin's denial as an A2A client sees it: -32023, with who and why."""
    denied = (result.get("_meta") or {}).get(mcp.META_DENIED) or {}
    text = "".join(b.get("text", "") for b in result.get("content") or ()
                   if isinstance(b, dict)) or "Denied"
    return error(rid, DENIED, text, denied), denied


def _denial(result: dict[str, Any], trace: A2aTrace, rid: Any) -> Answered:
    body, denied = denial_error(result, rid)
    trace.outcome = {"status": "denied", "by": denied.get("by"),
                     "reason": denied.get("reason")}
    return Answered(body)
