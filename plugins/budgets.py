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

A request reserves its estimate before it is sent: the prompt (the request's JSON / 4)
plus the larger of its ``max_tokens`` and max_completion_tokens (else
default_max_tokens), times ``n``.  One that would overrun a budget is refused (429 with
x-should-retry: false and retry-after).  When the answer comes, the reservation is
replaced by the usage the provider reported (a failed request gives it back; an answer
that reports none keeps it charged).  Windows are wall-clock (the minute, the UTC day),
so they mean the same after a worker restart (the state is snapshotted) and after an
upgrade.
An agent's limit is its own table's, else the most generous of its roles', else the
top-level one.  ``cost()`` prices a request for the audit record and the metrics.
"""

from __future__ import annotations

import time
from fnmatch import fnmatchcase
from typing import Annotated, Any, ClassVar

import orjson
from msgspec import Meta

from daemon.llm.texts import usage_of
from daemon.plugin import Deny, Plugin, PluginConfig

NonNegative = Annotated[float, Meta(ge=0)]
LIMITS = ("tokens_per_minute", "tokens_per_day", "cost_per_day")
PRUNE_AT = 1000  # (agent, model) entries before those of past days are dropped


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
    """(prompt tokens, completion tokens) a request may use, before it is sent.

    The prompt: the whole request's JSON / 4, since tool definitions, tool call arguments
    and images are billed too, not only message texts (token arrays: one per token).
    The completion: the larger of max_tokens and max_completion_tokens (else
    default_max_tokens), for each of ``n`` choices; none for embeddings."""
    prompt = max(len(orjson.dumps(body)) // 4 + 1, _token_ids(body.get("input")))
    if "input" in body and "messages" not in body:  # embeddings answer no tokens
        return prompt, 0
    given = [v for k in ("max_tokens", "max_completion_tokens")
             if (v := _count(body.get(k))) is not None]
    n = _count(body.get("n")) or 1
    return prompt, (max(given) if given else default_max_tokens) * n


def _count(value: Any) -> int | None:
    """``value`` if it is a count (an int >= 0, not a bool), else None."""
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= 0
    return value if ok else None


def _token_ids(value: Any) -> int:
    """Tokens given as ids (embeddings' ``input``: a list of ints, or of such lists)."""
    if not isinstance(value, list):
        return 0
    return sum(1 if isinstance(v, int) else _token_ids(v) if isinstance(v, list) else 0
               for v in value)


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
        # (agent, roles) -> its limits (LIMITS' order), worked out once: the config is
        # this instance's for good (a reload makes a new one)
        self.limits: dict[tuple[str, tuple[str, ...]], tuple[float, ...]] = {}

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

    def _limits(self, agent: str, roles: tuple[str, ...]) -> tuple[float, ...]:
        found = self.limits.get((agent, roles))
        if found is None:
            if len(self.limits) > 4096:  # agents come and go: stay bounded
                self.limits.clear()
            found = self.limits[(agent, roles)] = tuple(
                self.limit(agent, roles, name) for name in LIMITS)
        return found

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
            if len(usage) >= PRUNE_AT:  # a day's (agent, model) pairs: the older go
                for old in [k for k, e in usage.items() if e["day"][0] != day]:
                    del usage[old]
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
        limits = self._limits(call.agent, tuple(call.roles))
        if any(limits):
            checks = ((windows["minute"][1] + tokens, 60 - now % 60, "tokens this minute"),
                      (windows["day"][1] + tokens, 86400 - now % 86400, "tokens today"),
                      (windows["day"][2] + cost, 86400 - now % 86400, "cost today"))
            for most, (would, wait, what) in zip(limits, checks, strict=True):
                if most and would > most:
                    return Deny(f"budget for {call.agent} on {call.tool}: {most:g} {what}, "
                                f"and this request may take it to {would:g}; retry in "
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
        usage = usage_of(result)
        if usage is None:
            if "error" not in result:  # an answer that reports no usage: the estimate stays
                return None
            usage = (0, 0)  # a failed request used nothing
        used, spent = sum(usage), self.price(call.tool, *usage) or 0.0
        windows = self._windows(key, time.time())
        windows["minute"][1] = max(0, windows["minute"][1] + used - tokens)
        windows["day"][1] = max(0, windows["day"][1] + used - tokens)
        windows["day"][2] = max(0.0, windows["day"][2] + spent - cost)
        if not (windows["minute"][1] or windows["day"][1] or windows["day"][2]):
            del self.state["usage"][key]  # nothing used (a failed request): nothing kept
        return None

    def self_test(self) -> None:
        body = {"messages": [{"role": "user", "content": "x" * 40}], "max_tokens": 5, "n": 2}
        assert estimate(body, 1024) == (len(orjson.dumps(body)) // 4 + 1, 10)
        assert estimate({"input": [[1] * 900]}, 1024) == (900, 0)
