"""Who may see and call which tool: roles hold glob patterns of tool names.

An agent sees in tools/list exactly the tools it may call; any other tool answers like a
tool that does not exist.  The role "admin" (the local administrator) matches every tool.
Resources (by URI) and prompts (<upstream>__<prompt>) follow the same rules, with the
roles' ``resources`` and ``prompts`` patterns.
The ``a2a__NAME`` tools (A2A peers, gateway.a2a_tool) follow the roles' ``peers`` globs,
never ``tools``: one setting says which agents an agent may message, whatever the way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any

from daemon.gateway.upstream_links import SEPARATOR

A2A_PREFIX = "a2a" + SEPARATOR  # gateway.a2a_tool's tools

CACHE_LIMIT = 4096  # decisions kept; every name an agent tries would be one more


@dataclass
class Policy:
    agent_roles: dict[str, tuple[str, ...]]
    role_patterns: dict[str, tuple[str, ...]]
    call_timeout: float = 60.0
    tool_timeouts: dict[str, float] = field(default_factory=dict)
    upstreams: tuple[str, ...] = ()  # configured, whether up or not
    bare_upstream: str = ""  # the one whose tools keep their own names (prefix = "")
    resource_patterns: dict[str, tuple[str, ...]] = field(default_factory=dict)
    prompt_patterns: dict[str, tuple[str, ...]] = field(default_factory=dict)
    role_peers: dict[str, tuple[str, ...]] = field(default_factory=dict)  # A2A peer globs
    _cache: dict[tuple[str, str], bool] = field(default_factory=dict)

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> Policy:
        return cls(
            agent_roles={a: tuple(r) for a, r in options.get("agents", {}).items()},
            role_patterns={r: tuple(p) for r, p in options.get("roles", {}).items()},
            call_timeout=float(options.get("call_timeout", 60.0)),
            tool_timeouts={t: float(s) for t, s in options.get("tool_timeouts", {}).items()},
            upstreams=tuple(options.get("upstreams", ())),
            bare_upstream=str(options.get("bare_upstream", "")),
            resource_patterns={r: tuple(p) for r, p in
                               options.get("role_resources", {}).items()},
            prompt_patterns={r: tuple(p) for r, p in options.get("role_prompts", {}).items()},
            role_peers={r: tuple(p) for r, p in
                        (options.get("a2a") or {}).get("role_peers", {}).items()},
        )

    def upstream_of(self, tool: str) -> str | None:
        """The configured upstream a tool name belongs to (<upstream>__<tool>, or any
        other name: the bare upstream's, if there is one)."""
        prefix, sep, _ = tool.partition(SEPARATOR)
        if sep and (prefix in self.upstreams or prefix + SEPARATOR == A2A_PREFIX):
            return prefix if prefix in self.upstreams else None
        return self.bare_upstream or None

    def may_call(self, agent: str, tool: str) -> bool:
        key = (agent, tool)
        allowed = self._cache.get(key)
        if allowed is None:
            roles = self.agent_roles.get(agent, ())
            name, patterns = tool, self.role_patterns
            if tool.startswith(A2A_PREFIX):
                name, patterns = tool[len(A2A_PREFIX):], self.role_peers
            allowed = "admin" in roles or any(
                fnmatchcase(name, pattern)
                for role in roles for pattern in patterns.get(role, ()))
            if len(self._cache) >= CACHE_LIMIT:  # agents choose the names: stay bounded
                self._cache.clear()
            self._cache[key] = allowed
        return allowed

    def may_read(self, agent: str, uri: str) -> bool:
        """Whether the agent may see and read a resource (or a template, by its pattern)."""
        return self._grants(self.resource_patterns, agent, uri)

    def may_get(self, agent: str, prompt: str) -> bool:
        """Whether the agent may see and get a prompt (<upstream>__<prompt>)."""
        return self._grants(self.prompt_patterns, agent, prompt)

    def _grants(self, patterns: dict[str, tuple[str, ...]], agent: str, name: str) -> bool:
        roles = self.agent_roles.get(agent, ())
        return "admin" in roles or any(fnmatchcase(name, pattern) for role in roles
                                       for pattern in patterns.get(role, ()))

    def timeout_for(self, tool: str) -> float:
        return self.tool_timeouts.get(tool, self.call_timeout)
