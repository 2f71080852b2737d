"""MCP beyond tools: resources, resource templates, prompts and completions.

The lists merge every upstream's, filtered by the agent's roles (``resources`` and
``prompts`` patterns): resources keep their URIs, prompts are named <upstream>__<prompt>
like tools.  A resources/read, prompts/get or completion/complete becomes a call like a
tools/call: a Tool is made for it whose runner passes the request on to the upstream that
listed the resource (or whose one template matches its URI) or the prompt, so that it
waits for a restarting upstream, runs through the plugins that see its kind
(``call.kind``: "resource", "prompt", "completion"), is timed out and audited exactly as a
tool call is.  What the agent may not see answers exactly like what does not exist, and
the audit log says the roles denied it.

A tools/call retried with MRTR input (2026-07-28: ``inputResponses``/``requestState``,
after an ``input_required`` result) goes upstream the same way, with those fields.
"""

from __future__ import annotations

import asyncio
from typing import Any

from daemon.gateway.call_record import Trace
from daemon.gateway.permissions import Policy
from daemon.protocol import jsonrpc, mcp, uri_template
from daemon.protocol.jsonrpc import RpcError
from daemon.tools.registry import Offered, Progress, Requester, Tool, ToolRegistry

LIST_METHODS = frozenset({"resources/list", "resources/templates/list", "prompts/list"})
KINDS = {"resources/read": "resource", "prompts/get": "prompt",
         "completion/complete": "completion"}
RESOURCE_NOT_FOUND = -32002  # the MCP spec's code for a resource that is not there
DENIED = -32011  # a resource read, prompt get or completion a plugin denied
MRTR_FIELDS = ("inputResponses", "requestState")  # a retried multi round-trip request


class KindTrace(Trace):
    """A call's audit trace that says which kind of call it was (and its method)."""

    __slots__ = ("call_kind", "method", "metric")

    def __init__(self, call_kind: str, method: str, *args: Any) -> None:
        super().__init__(*args)
        self.call_kind = call_kind
        self.method = method
        # its metrics label: a template's read is labelled by the template, as agents
        # choose the URIs (a label per URI would be unbounded)
        self.metric: str | None = None

    def _base(self, kind: str, with_arguments: bool) -> dict[str, Any]:
        record = super()._base(kind, with_arguments)
        record["call_kind"] = self.call_kind
        record["method"] = self.method
        return record


class Hidden(RpcError):
    """What the roles hide: to the agent, exactly what does not exist (see RoleDenied)."""

    def __init__(self, code: int, message: str, reason: str, data: Any = None) -> None:
        super().__init__(code, message, data)
        self.reason = reason
        self.exists = True


def listing(method: str, agent: str, policy: Policy, tools: ToolRegistry) -> dict[str, Any]:
    """A list method's result, merged from every upstream and filtered by roles."""
    if method == "prompts/list":
        return {"prompts": [{**p.definition, "name": name}
                            for name, p in sorted(tools.prompts.items())
                            if policy.may_get(agent, name)]}
    if method == "resources/list":
        return {"resources": [r.definition for uri, r in sorted(tools.resources.items())
                              if policy.may_read(agent, uri)]}
    return {"resourceTemplates": [t.definition for t in tools.templates
                                  if policy.may_read(agent, t.name)]}


def resolve(method: str, agent: str, params: dict[str, Any], policy: Policy,
            tools: ToolRegistry) -> tuple[str, Tool, dict[str, Any]]:
    """(the name the call is audited under, the Tool that runs it, its arguments for the
    plugins), once the agent may make it; raises what the agent must be told."""
    request = tools.request
    assert request is not None  # an upstream links' registry has one
    forwarded = _forwarded(params)
    if method == "resources/read":
        uri = _string(params, "uri", method)
        offered = _resource(agent, uri, policy, tools)
        run = _runner(request, offered.upstream, method, {**forwarded, "uri": uri}, None)
        return uri, _tool(uri, offered, run), {"uri": uri}
    if method == "prompts/get":
        name = _string(params, "name", method)
        offered = _prompt(agent, name, policy, tools)
        arguments = params.get("arguments") or {}
        if not isinstance(arguments, dict):
            raise RpcError(jsonrpc.INVALID_PARAMS, "Invalid params: arguments must be an "
                                                   "object")
        run = _runner(request, offered.upstream, method, {**forwarded, "name": offered.name},
                      "arguments")
        return name, _tool(name, offered, run), arguments
    ref = params.get("ref")  # completion/complete
    if not isinstance(ref, dict) or not isinstance(params.get("argument"), dict):
        raise RpcError(jsonrpc.INVALID_PARAMS, "Invalid params: completion/complete needs "
                                               "params.ref and params.argument objects")
    if ref.get("type") == "ref/prompt" and isinstance(ref.get("name"), str):
        offered = _prompt(agent, ref["name"], policy, tools)
        ref = {**ref, "name": offered.name}
    elif ref.get("type") == "ref/resource" and isinstance(ref.get("uri"), str):
        offered = _resource(agent, ref["uri"], policy, tools)
    else:
        raise RpcError(jsonrpc.INVALID_PARAMS, "Invalid params: params.ref must be a "
                                               "ref/prompt with a name or a ref/resource "
                                               "with a uri")
    name = str(params["ref"].get("name") or params["ref"].get("uri"))
    run = _runner(request, offered.upstream, method, {**forwarded, "ref": ref}, None)
    return name, _tool(name, offered, run), {"ref": params["ref"],
                                             "argument": params["argument"]}


def retried(tool: Tool, params: dict[str, Any], request: Requester | None) -> Tool:
    """An upstream tool called again with MRTR input: those fields go upstream too."""
    if tool.origin is None or request is None:
        return tool
    upstream, own = tool.origin
    extra = {k: params[k] for k in MRTR_FIELDS if k in params}
    run = _runner(request, upstream, "tools/call",
                  {**_forwarded(params), **extra, "name": own}, "arguments")
    return Tool(tool.name, tool.description, tool.input_schema, run, ready=tool.ready,
                origin=tool.origin, listed=tool.listed)


def set_level(tools: ToolRegistry, level: str) -> Tool:
    """A Tool that passes logging/setLevel to every upstream that is up (each answers
    for itself: one that does not log answers at once, in its worker)."""
    request = tools.request
    upstreams = sorted(tools.live_upstreams)

    async def run(_arguments: dict[str, Any], _channel: Progress | None) -> dict[str, Any]:
        if request is not None and upstreams:
            await asyncio.gather(*(request(u, "logging/setLevel", {"level": level}, None)
                                   for u in upstreams), return_exceptions=True)
        return {}
    return Tool("logging/setLevel", "", {}, run)


def trace(kind: str, method: str, worker: str, agent: str, name: str | None,
          arguments: Any, keep_arguments: bool) -> KindTrace:
    return KindTrace(kind, method, worker, agent, name, arguments, keep_arguments)


def denial(result: dict[str, Any]) -> RpcError | None:
    """A plugin's denial of a resource read, prompt get or completion: their results
    have no isError, so the agent gets a JSON-RPC error that says who and why."""
    meta = result.get("_meta")
    denied = meta.get(mcp.META_DENIED) if isinstance(meta, dict) else None
    if denied is None:
        return None
    return RpcError(DENIED, f"Denied by {denied.get('by')}: {denied.get('reason')}",
                    {mcp.META_DENIED: denied})


def _string(params: dict[str, Any], key: str, method: str) -> str:
    value = params.get(key)
    if not isinstance(value, str):
        raise RpcError(jsonrpc.INVALID_PARAMS, f"Invalid params: {method} needs a string "
                                               f"params.{key}")
    return value


def _forwarded(params: dict[str, Any]) -> dict[str, Any]:
    """The params an upstream gets: the agent's, without its _meta (its token), but with
    the capabilities it declared (an upstream asks only for input a client can give)."""
    out = {k: v for k, v in params.items() if k != "_meta"}
    meta = params.get("_meta")
    if isinstance(meta, dict) and isinstance(meta.get(mcp.META_CAPABILITIES), dict):
        out["_meta"] = {mcp.META_CAPABILITIES: meta[mcp.META_CAPABILITIES]}
    return out


def _runner(request: Requester, upstream: str, method: str, params: dict[str, Any],
            arguments_key: str | None) -> Any:
    """A Tool runner that passes the request on (the plugins' arguments, maybe
    rewritten, go in as ``arguments_key``)."""

    async def run(arguments: dict[str, Any], channel: Progress | None) -> dict[str, Any]:
        sent = params if arguments_key is None else {**params, arguments_key: arguments}
        return await request(upstream, method, sent, channel)
    return run


def _tool(name: str, offered: Offered, run: Any) -> Tool:
    return Tool(name, str(offered.definition.get("description", "")), {}, run,
                ready=offered.ready, origin=(offered.upstream, offered.name))


def _resource(agent: str, uri: str, policy: Policy, tools: ToolRegistry) -> Offered:
    offered = tools.resources.get(uri)
    if offered is None:
        # a template's match: it is an upstream's only if exactly one upstream has one
        matches = [t for t in tools.templates if uri_template.matches(t.name, uri)]
        if len({t.upstream for t in matches}) == 1:
            offered = matches[0]
    if offered is None or not policy.may_read(agent, uri):
        if offered is not None:
            roles = ", ".join(policy.agent_roles.get(agent, ())) or "(none)"
            raise Hidden(RESOURCE_NOT_FOUND, "Resource not found",
                         f"roles {roles} do not allow resource {uri}", {"uri": uri})
        raise RpcError(RESOURCE_NOT_FOUND, "Resource not found", {"uri": uri})
    return offered


def _prompt(agent: str, name: str, policy: Policy, tools: ToolRegistry) -> Offered:
    offered = tools.prompts.get(name)
    if offered is None or not policy.may_get(agent, name):
        if offered is not None:
            roles = ", ".join(policy.agent_roles.get(agent, ())) or "(none)"
            raise Hidden(jsonrpc.INVALID_PARAMS, f"Unknown prompt: {name}",
                         f"roles {roles} do not allow prompt {name}")
        raise RpcError(jsonrpc.INVALID_PARAMS, f"Unknown prompt: {name}")
    return offered
