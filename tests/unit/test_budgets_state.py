"""The budgets plugin's state stays as small as what was used: an agent that sends
request after request for models that fail (made-up names its role's globs allow, which
the provider answers 404) leaves nothing behind, and past days' entries are dropped."""

from __future__ import annotations

import importlib.util
import sys
import time
from typing import Any

import msgspec

from daemon.plugin import Call
from tests.unit.test_bundled_plugin_shortcuts import PLUGINS

_spec = importlib.util.spec_from_file_location("bundled_budgets", PLUGINS / "budgets.py")
assert _spec is not None and _spec.loader is not None
budgets = sys.modules["bundled_budgets"] = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(budgets)  # registered first: msgspec resolves its annotations


def plugin(**config: Any) -> Any:
    made = budgets.Budgets(msgspec.convert(config, budgets.BudgetsConfig))
    made.state = made.initial_state()
    return made


def call(model: str) -> Call:
    return Call("alice", ("analyst",), model, {"model": model, "max_tokens": 10,
                                               "messages": [{"role": "user", "content": "hi"}]},
                kind="llm")


def test_requests_that_failed_leave_no_budget_state_behind() -> None:
    budget = plugin(tokens_per_day=100_000)

    for i in range(300):  # the bundled hooks are plain functions
        request = call(f"gpt-made-up-{i}")
        assert budget.before_call(request) is None
        budget.after_call(request, {"error": {"status": "error", "http": 404}})
    assert budget.state["usage"] == {}


def test_entries_of_past_days_are_dropped_once_there_are_many() -> None:
    budget = plugin(tokens_per_day=100_000)
    yesterday = int(time.time() // 86400) - 1
    budget.state["usage"] = {f"alice\x1fold-{i}": {"minute": [0, 5], "day": [yesterday, 5,
                                                                              0.0]}
                             for i in range(budgets.PRUNE_AT)}
    request = call("gpt-4o-mini")
    assert budget.before_call(request) is None
    assert list(budget.state["usage"]) == ["alice\x1fgpt-4o-mini"]
