"""budgets: token and cost budgets for LLM requests, per agent and model.

    [plugins.config.budgets]
    tokens_per_minute = 20000     # per (agent, model); 0 or absent: no limit
    tokens_per_day = 1000000
    cost_per_day = 5.0            # in the price table's currency; 0: no limit
    default_max_tokens = 1024     # the completion estimate of a request that sets none
    prices = [{ model = "gpt-4o-mini*", prompt = 0.15, completion = 0.60 }]  # per 1M
    [plugins.config.budgets.roles.analyst]   # an allowance for each agent in the role
    tokens_per_day = 200000
    [plugins.config.budgets.agents.alice]    # one agent's own (beats its roles)
    cost_per_day = 20.0

A request reserves its estimate before it is sent: the prompt (its characters / 4) plus
its ``max_tokens`` (or max_completion_tokens, or default_max_tokens).  One that would
overrun a budget is refused (429 with x-should-retry: false and retry-after).  When the
answer comes, the reservation is replaced by the usage the provider reported (a failed
request gives it back).  Windows are wall-clock (the minute, the UTC day), so they mean
the same after a worker restart (the state is snapshotted) and after an upgrade.
An agent's limit is its own table's, else the most generous of its roles', else the
top-level one.  ``cost()`` prices a request for the audit record and the metrics.
"""

from __future__ import annotations

import time
from fnmatch import fnmatchcase
from typing import Annotated, Any, ClassVar

from msgspec import Meta

from daemon.llm.texts import texts, usage_of
from daemon.plugin import Deny, Plugin, PluginConfig

NonNegative = Annotated[float, Meta(ge=0)]
LIMITS = ("tokens_per_minute", "tokens_per_day", "cost_per_day")


class Price(PluginConfig):
    model: str  # a glob; the first that matches prices the request
    prompt: NonNegative = 0.0  # per million prompt tokens
    completion: NonNegative = 0.0  # per million completion tokens


class Allowance(PluginConfig):
    tokens_per_minute: NonNegative | None = None
    tokens_per_day: NonNegative | None = None
    cost_per_day: NonNegative | None = None


class BudgetsConfig(PluginConfig):
    tokens_per_minute: NonNegative = 0
    tokens_per_day: NonNegative = 0
    cost_per_day: NonNegative = 0
    default_max_tokens: Annotated[int, Meta(ge=1)] = 1024
    prices: list[Price] = []
    roles: dict[str, Allowance] = {}
    agents: dict[str, Allowance] = {}


def estimate(body: dict[str, Any], default_max_tokens: int) -> tuple[int, int]:
    """(prompt tokens, completion tokens) a request may use, before it is sent."""
    prompt = sum(len(t) for t in texts(body)) // 4 + 1
    most = body.get("max_tokens", body.get("max_completion_tokens"))
    if not isinstance(most, int) or isinstance(most, bool) or most < 0:
        most = default_max_tokens
    return prompt, most


class Budgets(Plugin):
    name = "budgets"
    version = 1
    priority = 90  # late: it reserves for the request as the guardrails let it out
    kinds: ClassVar[frozenset[str]] = frozenset({"llm"})
    config_schema = BudgetsConfig
    config: BudgetsConfig

    def __init__(self, config: Any = None, log: Any = None) -> None:
        super().__init__(config, log)
        # request (its arguments' identity) -> (key, tokens, cost) reserved for it
        self.reserved: dict[int, tuple[str, int, float]] = {}

    def initial_state(self) -> dict[str, Any]:
        # "agent\x1fmodel" -> {"minute": [minute, tokens], "day": [day, tokens, cost]}
        return {"usage": {}}

    def migrate(self, old_state: Any, old_version: int | str) -> Any:
        return old_state

    def limit(self, agent: str, roles: tuple[str, ...], name: str) -> float:
        own = self.config.agents.get(agent)
        if own is not None and getattr(own, name) is not None:
            return float(getattr(own, name))
        allowed = [getattr(a, name) for r in roles if (a := self.config.roles.get(r))
                   is not None and getattr(a, name) is not None]
        if allowed:
            return 0.0 if 0 in allowed else float(max(allowed))  # 0: no limit
        return float(getattr(self.config, name))

    def price(self, model: str, prompt: int, completion: int) -> float | None:
        for price in self.config.prices:
            if fnmatchcase(model, price.model):
                return (prompt * price.prompt + completion * price.completion) / 1e6
        return None

    def cost(self, call: Any, usage: tuple[int, int]) -> float | None:
        return self.price(call.tool, *usage)

    def _windows(self, key: str, now: float) -> dict[str, list[float]]:
        usage = self.state["usage"]
        entry = usage.get(key)
        minute, day = int(now // 60), int(now // 86400)
        if entry is None:
            entry = usage[key] = {"minute": [minute, 0], "day": [day, 0, 0.0]}
        if entry["minute"][0] != minute:
            entry["minute"] = [minute, 0]
        if entry["day"][0] != day:
            entry["day"] = [day, 0, 0.0]
        return entry  # type: ignore[no-any-return]

    def before_call(self, call: Any) -> Deny | None:
        now = time.time()
        key = f"{call.agent}\x1f{call.tool}"
        prompt, completion = estimate(call.arguments, self.config.default_max_tokens)
        tokens, cost = prompt + completion, self.price(call.tool, prompt, completion) or 0.0
        windows = self._windows(key, now)
        roles = tuple(call.roles)
        checks = (("tokens_per_minute", windows["minute"][1] + tokens, 60 - now % 60,
                   "tokens this minute"),
                  ("tokens_per_day", windows["day"][1] + tokens, 86400 - now % 86400,
                   "tokens today"),
                  ("cost_per_day", windows["day"][2] + cost, 86400 - now % 86400,
                   "cost today"))
        for name, would, wait, what in checks:
            most = self.limit(call.agent, roles, name)
            if most and would > most:
                return Deny(f"budget for {call.agent} on {call.tool}: {most:g} {what}, and "
                            f"this request may take it to {would:g}; retry in "
                            f"{max(1, int(wait) + 1)}s", "rate_limit")
        windows["minute"][1] += tokens
        windows["day"][1] += tokens
        windows["day"][2] += cost
        if len(self.reserved) > 10000:  # requests that never ended (cancelled): forget
            self.reserved.clear()
        self.reserved[id(call.arguments)] = (key, tokens, cost)
        return None

    def after_call(self, call: Any, result: dict[str, Any]) -> None:
        found = self.reserved.pop(id(call.arguments), None)
        if found is None:  # a rewritten request, or reserved before a restart
            prompt, completion = estimate(call.arguments, self.config.default_max_tokens)
            found = (f"{call.agent}\x1f{call.tool}", prompt + completion,
                     self.price(call.tool, prompt, completion) or 0.0)
        key, tokens, cost = found
        usage = usage_of(result) or (0, 0)
        used, spent = sum(usage), self.price(call.tool, *usage) or 0.0
        windows = self._windows(key, time.time())
        windows["minute"][1] = max(0, windows["minute"][1] + used - tokens)
        windows["day"][1] = max(0, windows["day"][1] + used - tokens)
        windows["day"][2] = max(0.0, windows["day"][2] + spent - cost)
        return None

    def self_test(self) -> None:
        assert estimate({"messages": [{"role": "user", "content": "x" * 40}],
                         "max_tokens": 5}, 1024) == (11, 5)
