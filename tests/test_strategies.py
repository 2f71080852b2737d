"""kill -9 of a worker restarts exactly what the strategy says."""

from __future__ import annotations

import os
import signal
from typing import Any

import pytest

from tests.conftest import wait_for


def tree(strategy: str) -> dict[str, Any]:
    return {"id": "root", "children": [
        {"id": "sup", "strategy": strategy, "children": [
            {"id": "a"}, {"id": "b"}, {"id": "c"}]},
        {"id": "bystander"},
    ]}


def kill_and_wait(daemon: Any, name: str, expect_new: set[str]) -> dict[str, int]:
    before = daemon.wait_ready() and daemon.pids()
    os.kill(before[name], signal.SIGKILL)

    def settled() -> dict[str, int] | None:
        now = daemon.pids()
        changed = {n for n in before if now.get(n) and now[n] != before[n]}
        return now if changed == expect_new and len(now) == len(before) else None
    after: dict[str, int] = wait_for(settled, 10, f"exactly {sorted(expect_new)} to restart")
    for n in set(before) - expect_new:
        assert after[n] == before[n], f"{n} should have kept pid {before[n]}"
    return after


@pytest.mark.parametrize("strategy, victim, restarted", [
    ("one_for_one", "b", {"b"}),
    ("one_for_all", "b", {"a", "b", "c"}),
    ("rest_for_one", "b", {"b", "c"}),
    ("rest_for_one", "a", {"a", "b", "c"}),
    ("rest_for_one", "c", {"c"}),
])
def test_kill_9_restarts_only_what_the_strategy_says(start_daemon, strategy, victim, restarted):
    daemon = start_daemon(tree=tree(strategy))
    kill_and_wait(daemon, victim, restarted)
    log = daemon.log()
    assert f"root/sup/{victim} crashed (killed by SIGKILL)" in log
    assert f"strategy {strategy}" in log
    assert daemon.workers()[victim]["restarts"] == 1


def test_one_for_all_restarts_in_start_order_after_stopping_in_reverse(start_daemon):
    daemon = start_daemon(tree=tree("one_for_all"))
    kill_and_wait(daemon, "a", {"a", "b", "c"})
    log = daemon.log()
    crash = log.index("root/sup/a crashed")
    stops = [log.index(f"root/sup/{n} stopped", crash) for n in ("c", "b")]
    assert stops == sorted(stops), "siblings are stopped in reverse start order"
    starts = [log.index(f"root/sup/{n} restarted", crash) for n in ("a", "b", "c")]
    assert starts == sorted(starts), "children are restarted in start order"
