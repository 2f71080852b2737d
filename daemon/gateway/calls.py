"""What a gateway worker does with one agent request: tools/list or tools/call (and, by
gateway.passthrough, the resource, prompt and completion requests, as calls of their kind).

The master has read the request's head (protocol.request_head: the JSON-RPC shape, the
protocol version, the token and the tool's name) and passes the name along; here the
request is parsed in full, once, and refused if a key appears twice in one object (the
master read last-wins values: they must be the only ones).  Then the agent's roles
decide what it sees and may call, and the tool runs under its timeout.  Every request
ends in exactly one response (or none, if the agent cancelled it).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from daemon.audit.link import AuditLink
from daemon.audit.records import error_outcome
from daemon.gateway import passthrough, plugin_chain
from daemon.gateway.call_record import Trace, result_outcome, withheld
from daemon.gateway.permissions import Policy
from daemon.gateway.plugin_host import PluginHost
from daemon.gateway.upstream_links import upstream_unavailable
from daemon.ipc.call_slot import CallSlot
from daemon.plugin import Call
from daemon.protocol import jsonrpc, mcp
from daemon.protocol.duplicate_keys import duplicate_key, duplicate_message
from daemon.protocol.jsonrpc import RpcError
from daemon.protocol.mcp import META_LOG_LEVEL
from daemon.tools.registry import LOG_LEVELS, CallChannel, Tool, ToolRegistry

log = logging.getLogger("gateway")


@dataclass(slots=True)  # not frozen: its generated __init__ cost 1 µs per call
class Pending:
    """A tools/call that must be awaited, already parsed and resolved (once)."""

    agent: str
    rid: jsonrpc.RequestId
    params: dict[str, Any]
    stateless: bool
    tool: Tool
    arguments: dict[str, Any]
    trace: Trace
    seq: int = 0  # the master's number for this call (what the call slot names)
    kind: str = "tool"  # Call.kind: which plugins see it (resource, prompt, completion)


@dataclass(slots=True)
class Answer:
    """A response, and the audit record that must be durable before it may be sent."""

    rid: jsonrpc.RequestId | None
    reply: bytes
    trace: Trace | None = None  # None: not a tools/call (no record)
    record: bytes | None = None
    status: str = "ok"
    audit_failed: bool = False  # refused because the audit log could not record it


class CallHandler:
    def __init__(self, policy: Policy, tools: ToolRegistry, plugins: PluginHost | None = None,
                 audit: AuditLink | None = None, worker: str = "",
                 keep_arguments: bool = True, slot: CallSlot | None = None) -> None:
        self.policy = policy
        self.slot = slot
        self.tools = tools
        self.plugins = plugins or PluginHost()
        self.audit = audit
        self.worker = worker
        self.keep_arguments = keep_arguments

    def begin(self, agent: str, name: str | None, raw: bytes,
              seq: int = 0) -> Answer | Pending:
        """The answer, when nothing must be awaited (tools/list, an inline tool and no
        plugins, an error found before any tool runs); else the call to ``finish``.
        ``name``: the tool the master read (None: tools/list, or not a string).
        The caller marks the call slot around it: an inline tool may run here."""
        try:
            message = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:  # text the master's head reader skipped
            return Answer(None, jsonrpc.error(None, jsonrpc.PARSE_ERROR, f"Parse error: {exc}"))
        rid = message["id"]
        twice = duplicate_key(raw, message)
        if twice is not None:
            return Answer(rid, jsonrpc.error(None if twice == "id" else rid,
                                             jsonrpc.INVALID_REQUEST, duplicate_message(twice)))
        params = message.get("params") or {}
        trace = None
        try:
            stateless = mcp.request_version(params.get("_meta")) is not None
            method = message["method"]
            if method == "tools/list":
                return Answer(rid, jsonrpc.result(rid, self.list_tools(agent, stateless)))
            if method != "tools/call":
                return self._begin_other(agent, rid, method, params, stateless, seq)
            trace = Trace(self.worker, agent, name, params.get("arguments"),
                          self.keep_arguments)
            tool, arguments = self._resolve(agent, name, params)
            trace.known = True
            if "requestState" in params or "inputResponses" in params:  # an MRTR retry
                tool = passthrough.retried(tool, params, self.tools.request)
            pending = Pending(agent, rid, params, stateless, tool, arguments, trace, seq)
            if tool.inline is None or self.plugins.chain_for("tool"):
                return pending
            try:
                result = tool.inline(arguments)
            except Exception as exc:
                result = self._failed(agent, tool.name, exc)
            return self._answer(pending, mcp.finish(result, stateless))
        except RpcError as exc:
            return _error(rid, trace, exc)

    def _begin_other(self, agent: str, rid: jsonrpc.RequestId, method: str,
                     params: dict[str, Any], stateless: bool, seq: int) -> Answer | Pending:
        """A resource, prompt or completion request (gateway.passthrough)."""
        if method in passthrough.LIST_METHODS:
            listed = passthrough.listing(method, agent, self.policy, self.tools)
            return Answer(rid, jsonrpc.result(rid, mcp.finish(listed, stateless,
                                                              cacheable=True)))
        if method == "logging/setLevel":
            return self._set_level(agent, rid, params, stateless, seq)
        kind = passthrough.KINDS.get(method)
        if kind is None:
            raise RpcError(jsonrpc.METHOD_NOT_FOUND, f"Method not found: {method}")
        named = params.get("uri") if kind == "resource" else params.get("name")
        # until it resolves, its params stand for its arguments (never its _meta: the token)
        trace = passthrough.trace(kind, method, self.worker, agent, named,
                                  {k: v for k, v in params.items() if k != "_meta"},
                                  self.keep_arguments)
        try:
            name, tool, arguments = passthrough.resolve(method, agent, params, self.policy,
                                                        self.tools)
        except RpcError as exc:
            return _error(rid, trace, exc)
        trace.tool, trace.arguments, trace.known = name, arguments, True
        trace.metric = name if kind == "prompt" or tool.origin is None else tool.origin[1]
        return Pending(agent, rid, params, stateless, tool, arguments, trace, seq, kind)

    def _set_level(self, agent: str, rid: jsonrpc.RequestId, params: dict[str, Any],
                   stateless: bool, seq: int) -> Answer | Pending:
        """logging/setLevel: passed to every upstream that is up (handshake era only:
        2026-07-28 asks for a level per request, in ``_meta``); audited like a call."""
        if stateless:
            raise RpcError(jsonrpc.METHOD_NOT_FOUND, "Method not found: logging/setLevel "
                                                     "(2026-07-28 sets the level per "
                                                     f"request, in _meta[{META_LOG_LEVEL!r}])")
        level = params.get("level")
        trace = passthrough.trace("logging", "logging/setLevel", self.worker, agent,
                                  "logging/setLevel", {"level": level}, self.keep_arguments)
        if level not in LOG_LEVELS:
            return _error(rid, trace, RpcError(jsonrpc.INVALID_PARAMS, "Invalid params: "
                                               f"level must be one of {', '.join(LOG_LEVELS)}"))
        trace.known = True
        tool = passthrough.set_level(self.tools, str(level))
        return Pending(agent, rid, params, stateless, tool, {"level": level}, trace, seq,
                       "logging")

    async def finish(self, pending: Pending, send: Callable[[bytes], None] | None = None,
                     started: Callable[[], None] | None = None) -> Answer:
        """``send``: a bus envelope to the master, for what the call streams to its
        agent before the answer (tools.registry.CallChannel); None: nothing streams."""
        try:
            channel = None if send is None else _channel(send, pending)
            result = await self.call_tool(pending, channel, started)
            if pending.kind != "tool":
                refusal = passthrough.denial(result)
                if refusal is not None:  # no isError in their results: an error says it
                    answer = self._answer(pending, result)
                    answer.reply = jsonrpc.error(pending.rid, refusal.code, refusal.message,
                                                 refusal.data)
                    return answer
            return self._answer(pending, result)
        except Exception as exc:
            return _failure(pending, exc)

    def finish_now(self, pending: Pending) -> Answer | None:
        """``finish`` without a coroutine, for a call to an inline tool whose chain has
        only plain-function hooks (plugin_chain.passes_now); None for any other call.  The
        caller marks the call slot around it, as around ``begin``."""
        tool = pending.tool
        if tool.inline is None or pending.kind != "tool":
            return None
        chain = self.plugins.chain_for("tool")
        passes = plugin_chain.passes_now(chain, "tool")
        if passes is None:
            return None
        try:
            arguments, trace, slot, seq = pending.arguments, pending.trace, self.slot, pending.seq
            call = self._call(pending)
            if chain:
                redacted: list[Any] = []
                admitted = plugin_chain.before_now(passes, call, trace.trail, slot, seq,
                                                   redacted)
                if isinstance(admitted, dict):
                    return self._answer(pending, self._refused(pending, admitted, redacted))
                if admitted.arguments is not arguments:  # rewritten (maybe redacted)
                    trace.kept = admitted.arguments
                call = admitted
            if slot is not None:
                slot.running(seq)
            try:
                result = tool.inline(call.arguments)
            except RpcError:
                raise  # a protocol answer, not a tool failure (as in call_tool)
            except Exception as exc:
                result = self._failed(pending.agent, tool.name, exc)
            if chain:
                result = self._passed(pending, result, plugin_chain.after_now(
                    passes, call, result, trace.trail, slot, seq))
            return self._answer(pending, mcp.finish(result, pending.stateless))
        except Exception as exc:
            return _failure(pending, exc)

    def _call(self, pending: Pending) -> Call:
        """The call as plugins see it."""
        tool, agent = pending.tool, pending.agent
        return Call(agent, self.policy.agent_roles.get(agent, ()), tool.name,
                    pending.arguments, tool.input_schema, tool.description, pending.kind)

    @staticmethod
    def _refused(pending: Pending, denial: dict[str, Any],
                 redacted: list[Any]) -> dict[str, Any]:
        """The denial result of a call the before hooks refused."""
        if redacted:
            pending.trace.kept = redacted[0]
        return mcp.finish(denial, pending.stateless)

    @staticmethod
    def _passed(pending: Pending, given: dict[str, Any],
                result: dict[str, Any]) -> dict[str, Any]:
        """What the after hooks let through of ``given``: if they denied it, the record
        says what the tool gave (never the result itself)."""
        if result is not given and _denied(result) and not _denied(given):
            pending.trace.withheld = withheld(given)
        return result

    @staticmethod
    def _answer(pending: Pending, result: dict[str, Any]) -> Answer:
        raw = orjson.dumps(result)
        outcome = result_outcome(result, raw)
        return Answer(pending.rid, jsonrpc.result_raw(pending.rid, raw), pending.trace,
                      pending.trace.call_record(outcome), outcome["status"])

    def list_tools(self, agent: str, stateless: bool) -> dict[str, Any]:
        visible = [t.definition() for t in self.tools.all()
                   if self.policy.may_call(agent, t.name)]
        return mcp.finish({"tools": visible}, stateless, cacheable=True)

    def _resolve(self, agent: str, name: str | None,
                 params: dict[str, Any]) -> tuple[Tool, dict[str, Any]]:
        """The tool and arguments of a call, once the agent may make it."""
        if name is None:
            raise RpcError(jsonrpc.INVALID_PARAMS, "Invalid params: tools/call needs a "
                                                   "string params.name")
        tool = self.tools.get(name)
        if tool is None or not self.policy.may_call(agent, name):
            upstream = self.policy.upstream_of(name)
            if (tool is None and upstream and upstream not in self.tools.live_upstreams
                    and self.policy.may_call(agent, name)):
                # it may exist, but its server is down
                raise upstream_unavailable(upstream, self.tools.retry_at.get(upstream))
            # a hidden tool answers exactly like one that does not exist, but the audit
            # log says the roles denied it: an agent probing for tools shows up there
            if tool is not None or (upstream and upstream != self.policy.bare_upstream):
                raise RoleDenied(name, self.policy.agent_roles.get(agent, ()), tool is not None)
            raise RpcError(jsonrpc.INVALID_PARAMS, f"Unknown tool: {name}")
        arguments = params.get("arguments", {})
        if arguments is None:
            arguments = {}
        if not isinstance(arguments, dict):
            raise RpcError(jsonrpc.INVALID_PARAMS, "Invalid params: arguments must be an "
                                                   "object")
        return tool, arguments

    async def call_tool(self, pending: Pending, progress: CallChannel | None = None,
                        started: Callable[[], None] | None = None) -> dict[str, Any]:
        """``started`` is told just before a tool with effects runs (see STARTED)."""
        agent, tool, arguments, stateless = (pending.agent, pending.tool, pending.arguments,
                                             pending.stateless)
        name = tool.name
        timeout = self.policy.timeout_for(name)
        # this call's chain, whatever a swap does meanwhile: the plugins that see its kind
        chain = self.plugins.chain_for(pending.kind)
        trail = pending.trace.trail
        call = self._call(pending)
        slot, seq = self.slot, pending.seq
        if chain:
            redacted: list[Any] = []
            admitted = await plugin_chain.before(chain, call, trail, slot, seq, redacted)
            if isinstance(admitted, dict):
                return self._refused(pending, admitted, redacted)
            if admitted.arguments is not arguments:  # rewritten (maybe redacted)
                pending.trace.kept = admitted.arguments
            call = admitted
        try:
            if tool.inline is not None:  # pure: nothing to announce, nothing to await
                if slot is None:
                    result = tool.inline(call.arguments)
                else:
                    slot.running(seq)
                    try:
                        result = tool.inline(call.arguments)
                    finally:
                        slot.idle()
            else:
                deadline = asyncio.get_running_loop().time() + timeout
                if tool.ready is not None:  # a restarting upstream: wait, so that nothing
                    await tool.ready(deadline)  # is recorded or announced if it stays away
                if self.audit is not None:  # no tool with effects runs unrecorded
                    pending.trace.intent = await self.audit.write(
                        pending.trace.intent_record())
                if started is not None:
                    started()
                async with asyncio.timeout_at(deadline):
                    result = await tool.run(call.arguments, progress)
        except TimeoutError:
            raise RpcError(jsonrpc.TIMED_OUT, f"Timed out: {name} did not finish within "
                                              f"{timeout:g}s") from None
        except RpcError:
            raise  # a protocol answer (an upstream's error, -32015): not a tool failure
        except Exception as exc:
            result = self._failed(agent, name, exc)
        if chain:
            result = self._passed(pending, result, await plugin_chain.after(
                chain, call, result, trail, slot, seq))
        return mcp.finish(result, stateless)

    @staticmethod
    def _failed(agent: str, name: str, exc: Exception) -> dict[str, Any]:
        """A tool that ran and failed answers isError, as MCP says."""
        log.warning("tool %s failed for %s: %s", name, agent, exc)
        return mcp.text_result(f"Tool {name} failed: {exc}", is_error=True)


class RoleDenied(RpcError):
    """A tool the agent's roles hide: to the agent, exactly an unknown tool."""

    def __init__(self, tool: str, roles: tuple[str, ...], exists: bool) -> None:
        super().__init__(jsonrpc.INVALID_PARAMS, f"Unknown tool: {tool}")
        self.reason = (f"roles {', '.join(roles) or '(none)'} do not allow tool {tool}")
        self.exists = exists  # a real tool's name is a bounded metrics label


def _failure(pending: Pending, exc: Exception) -> Answer:
    """A call that ended in an exception: its protocol error, or an internal one."""
    if not isinstance(exc, RpcError):
        log.error("request %r from %s failed", pending.rid, pending.agent, exc_info=exc)
        exc = RpcError(jsonrpc.INTERNAL_ERROR, "Internal error")
    return _error(pending.rid, pending.trace, exc)


def _error(rid: jsonrpc.RequestId, trace: Trace | None, exc: RpcError) -> Answer:
    reply = jsonrpc.error(rid, exc.code, exc.message, exc.data)
    if trace is None:
        return Answer(rid, reply)
    outcome = error_outcome(exc.code, exc.message)
    status = "error"
    if isinstance(exc, RoleDenied | passthrough.Hidden):
        trace.trail.append(("roles", "-", "before_call", "deny", exc.reason, 0.0))
        trace.known = exc.exists
        outcome.update(status="denied", by="roles")
        status = "denied"
    return Answer(rid, reply, trace, trace.call_record(outcome), status,
                  exc.code == jsonrpc.AUDIT_UNAVAILABLE)


def _denied(result: dict[str, Any]) -> bool:
    meta = result.get("_meta")
    return isinstance(meta, dict) and mcp.META_DENIED in meta


def _channel(send: Callable[[bytes], None], pending: Pending) -> CallChannel:
    """The call's stream to its agent (progress, log messages, upstreams' requests)."""
    return CallChannel(send, pending.seq, pending.params.get("_meta") or {},
                       pending.stateless, pending.agent, pending.trace)
