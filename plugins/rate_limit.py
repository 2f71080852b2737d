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
from typing import Any

from daemon.plugin import Deny, Plugin


class RateLimit(Plugin):
    name = "rate_limit"
    version = 1
    priority = 10

    def initial_state(self) -> dict[str, Any]:
        return {"buckets": {}}  # key -> [tokens, wall-clock time of that count]

    def _limits(self, tool: str) -> list[tuple[str, float, float]]:
        c = self.config
        out = []
        if c.get("agent_rate"):
            out.append(("agent", float(c["agent_rate"]), float(c.get("agent_burst", 1))))
        override = (c.get("tools") or {}).get(tool)
        if override:
            out.append(("tool", float(override["rate"]), float(override.get("burst", 1))))
        elif c.get("tool_rate"):
            out.append(("tool", float(c["tool_rate"]), float(c.get("tool_burst", 1))))
        return out

    async def before_call(self, call: Any) -> Deny | None:
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
