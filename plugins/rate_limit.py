"""rate_limit: token buckets per agent and per (agent, tool).

    [plugins.config.rate_limit]
    agent_rate = 10.0     # calls per second an agent may sustain (0 or absent: no limit)
    agent_burst = 20      # calls it may make at once
    tool_rate = 2.0       # the same per (agent, tool)
    tool_burst = 5
    [plugins.config.rate_limit.tools.files__search]   # per-tool override
    rate = 0.5
    burst = 2

Buckets keep wall-clock times, so they mean the same after a worker restart (state is
snapshotted) and after an upgrade (``migrate``).  One agent's calls always reach the same
gateway worker, so its buckets live in one place.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

from msgspec import Meta

from daemon.plugin import Deny, Plugin, PluginConfig


class ToolLimit(PluginConfig):
    rate: Annotated[float, Meta(gt=0)]  # calls per second
    burst: Annotated[float, Meta(ge=1)] = 1


class RateLimitConfig(PluginConfig):
    agent_rate: Annotated[float, Meta(ge=0)] = 0  # 0: no limit per agent
    agent_burst: Annotated[float, Meta(ge=1)] = 1
    tool_rate: Annotated[float, Meta(ge=0)] = 0  # 0: no limit per (agent, tool)
    tool_burst: Annotated[float, Meta(ge=1)] = 1
    tools: dict[str, ToolLimit] = {}  # per-tool overrides


class RateLimit(Plugin):
    name = "rate_limit"
    version = 1
    priority = 10
    config_schema = RateLimitConfig
    config: RateLimitConfig

    def __init__(self, config: Any = None, log: Any = None) -> None:
        super().__init__(config, log)
        c = self.config
        if not (c.agent_rate or c.tool_rate or c.tools):
            self.kinds = frozenset()  # no limits: no call to count, no hook to run

    def initial_state(self) -> dict[str, Any]:
        return {"buckets": {}}  # key -> [tokens, wall-clock time of that count]

    def _limits(self, tool: str) -> list[tuple[str, float, float]]:
        c = self.config
        out = []
        if c.agent_rate:
            out.append(("agent", c.agent_rate, c.agent_burst))
        override = c.tools.get(tool)
        if override is not None:
            out.append(("tool", override.rate, override.burst))
        elif c.tool_rate:
            out.append(("tool", c.tool_rate, c.tool_burst))
        return out

    def before_call(self, call: Any) -> Deny | None:
        c = self.config
        if not (c.agent_rate or c.tool_rate or c.tools):  # no limits: nothing to count
            return None
        now = time.time()
        buckets = self.state["buckets"]
        taken = []
        for scope, rate, burst in self._limits(call.tool):
            key = call.agent if scope == "agent" else f"{call.agent}\x1f{call.tool}"
            tokens, at = buckets.get(key, (burst, now))
            tokens = min(burst, tokens + (now - at) * rate)
            if tokens < 1:
                for k, before in taken:  # all or nothing across the buckets
                    buckets[k] = before
                wait = (1 - tokens) / rate
                what = call.agent if scope == "agent" else f"{call.agent} on {call.tool}"
                return Deny(f"rate limit for {what}: {rate:g}/s, burst {burst:g}; "
                            f"retry in {wait:.1f}s", "rate_limit")
            taken.append((key, buckets.get(key, [burst, now])))
            buckets[key] = [tokens - 1, now]
        return None
