"""Poison calls: a call whose plugin hook spins, crashes or hangs its worker costs that
call (and, if it keeps happening, that agent), never the worker or anyone else."""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
import urllib.request
from pathlib import Path

import pytest

from daemon.client import AsyncAgentClient
from daemon.protocol.jsonrpc import RpcError
from tests.audit_helpers import audit_dir, records
from tests.gateway_helpers import TOKENS, agent, gateway_config, listen, shard, tcp_address

POISON = '''
import itertools
import os
import re
from daemon.plugin import Plugin

class Poison(Plugin):
    name = "poison"
    version = 1
    priority = 1

    async def before_call(self, call):
        a = call.arguments
        if a.get("spin"):  # a guardrail stuck in a pure-Python loop
            while True:
                pass
        if a.get("stubborn"):  # one that even swallows the interrupt
            while True:
                try:
                    while True:
                        pass
                except BaseException:
                    pass
        if a.get("regex"):  # catastrophic backtracking (re checks for signals)
            re.match(r"(a+)+$", "a" * 64 + "b")
        if a.get("c_loop"):  # C code that holds the GIL and never checks for signals
            sum(itertools.repeat(0))
        if a.get("crash"):
            os._exit(9)
        return None
'''

MALLORY = "mallory-token"  # sharded to the same gateway worker as bob
BUDGET_MS, GRACE_MS = 50, 500
STORM_GRACE_MS = 1000  # the whole suite shares 2 cores: the grace a loaded machine needs


@pytest.fixture
def poisoned(start_daemon, state_dir: Path):
    plugins = state_dir / "plugins"
    plugins.mkdir(mode=0o755)
    (plugins / "poison.py").write_text(POISON)

    def start(hook_grace_ms: float = GRACE_MS, **supervision: float):
        config = gateway_config()
        config["agents.mallory"] = {"token_sha256": hashlib.sha256(MALLORY.encode())
                                    .hexdigest(), "roles": ["ops"]}
        config["plugins"] = {"dirs": [str(plugins)], "budget_ms": BUDGET_MS,
                             "hook_grace_ms": hook_grace_ms}
        d = start_daemon(extra=config, supervision=supervision)
        d.wait_ready()
        return d
    assert shard("mallory") == shard("bob")
    return start


def mallory(daemon):
    from daemon.client import AgentClient
    return AgentClient.tcp(*tcp_address(daemon), MALLORY)


def worker_state(daemon, name: str) -> tuple[int, int]:
    w = daemon.workers()[name]
    return w["pid"], w["restarts"]


@pytest.mark.parametrize("poison", ["spin", "regex"])
def test_a_spinning_hook_is_interrupted_denied_naming_the_plugin_and_the_worker_serves_on(
        poisoned, poison):
    d = poisoned()
    before = worker_state(d, shard("bob"))
    with agent(d, "bob") as bob:
        started = time.monotonic()
        spun = bob.call_tool("echo", {poison: True})
        took = time.monotonic() - started
        assert spun["isError"] is True
        assert "Denied by poison: plugin poison overran its 50 ms budget (interrupted)" in \
            spun["content"][0]["text"]
        assert spun["_meta"]["io.workingagents/denied"]["by"] == "poison"
        assert took < 5, took  # interrupted, not waited out
        assert bob.call_tool("echo", {"after": 1})["isError"] is False
    assert worker_state(d, shard("bob")) == before  # same pid, no restart
    assert "overran its 50 ms budget and was interrupted" in d.log()


def test_a_hook_that_swallows_the_interrupt_gets_its_worker_replaced_after_the_grace(
        poisoned):
    d = poisoned(heartbeat_timeout=30.0)  # so that only the hook grace can catch it
    pid, restarts = worker_state(d, shard("bob"))
    with agent(d, "bob") as bob:
        started = time.monotonic()
        with pytest.raises(RpcError) as err:
            bob.call_tool("echo", {"stubborn": True})
        assert err.value.code == -32018
        assert time.monotonic() - started < 10
        assert bob.call_tool("echo", {"after": 1})["isError"] is False
    new_pid, new_restarts = worker_state(d, shard("bob"))
    assert new_pid != pid and new_restarts == restarts + 1
    assert "stuck in plugin poison past its budget" in d.log()


def test_a_hook_stuck_in_c_code_costs_only_its_call_and_queued_calls_go_to_the_replacement(
        poisoned):
    d = poisoned(heartbeat_timeout=30.0)
    pid, restarts = worker_state(d, shard("bob"))

    async def scenario() -> tuple[object, dict, float]:
        bad = await AsyncAgentClient.tcp(*tcp_address(d), MALLORY)
        good = await AsyncAgentClient.tcp(*tcp_address(d), TOKENS["bob"])
        try:
            stuck = asyncio.ensure_future(bad.call_tool("echo", {"c_loop": True}))
            await asyncio.sleep(0.01)  # queued behind it, on the same worker
            started = time.monotonic()
            queued = await good.call_tool("echo", {"queued": True})
            waited = time.monotonic() - started
            try:
                outcome: object = await stuck
            except RpcError as exc:
                outcome = exc
            return outcome, queued, waited
        finally:
            await bad.close()
            await good.close()

    outcome, queued, waited = asyncio.run(scenario())
    assert isinstance(outcome, RpcError) and outcome.code == -32018, outcome
    assert "not retried" in outcome.message
    assert queued["isError"] is False and waited < 10
    new_pid, new_restarts = worker_state(d, shard("bob"))
    assert new_pid != pid and new_restarts == restarts + 1  # replaced once, not again
    assert "stuck in plugin poison past its budget" in d.log()
    lost = [r for r in records(audit_dir(d.state_dir)) if r.get("kind") == "lost"]
    assert [(r["agent"], r["tool"], r["outcome"]["code"]) for r in lost] == [
        ("mallory", "echo", -32018)]


def test_an_agent_whose_calls_keep_killing_workers_is_quarantined_and_others_are_not(
        poisoned):
    d = poisoned()
    gateway = d.status()["tree"]["children"][1]
    with mallory(d) as bad, agent(d, "bob") as good:
        for _ in range(3):
            with pytest.raises(RpcError) as err:
                bad.call_tool("echo", {"crash": True})
            assert err.value.code == -32018
            assert good.call_tool("echo", {"ok": 1})["isError"] is False
        with pytest.raises(RpcError) as err:
            bad.call_tool("echo", {"harmless": True})
        assert err.value.code == -32019
        assert 0 < err.value.data["retry_after"] <= 30
        assert good.call_tool("echo", {"ok": 2})["isError"] is False
    status = d.status()
    assert [q["agent"] for q in status["quarantine"]] == ["mallory"]
    assert status["tree"]["children"][1]["state"] == gateway["state"] == "ready"
    assert "agent QUARANTINED mallory" in d.cli("status").stdout
    assert "agent mallory quarantined for 30s" in d.log()
    with urllib.request.urlopen(f"http://{listen(d)['metrics']}/metrics", timeout=5) as r:
        scraped = r.read().decode()
    assert 'workingagents_agent_quarantined{agent="mallory"} 1.0' in scraped
    assert 'workingagents_agent_strikes_total{agent="mallory",why="crashed"} 3.0' in scraped
    refused = [r for r in records(audit_dir(d.state_dir)) if r.get("kind") == "refused"]
    assert refused and refused[-1]["outcome"]["code"] == -32019


@pytest.mark.serial  # a bound on the good agent's latency
def test_a_storm_of_spinning_calls_leaves_a_good_agent_on_the_same_worker_unharmed(poisoned):
    d = poisoned(hook_grace_ms=STORM_GRACE_MS)
    pid = worker_state(d, shard("bob"))[0]

    async def storm(bad: AsyncAgentClient, until: float, outcomes: list[str]) -> None:
        async def one() -> None:
            try:
                result = await bad.call_tool("echo", {"spin": True})
                outcomes.append("denied" if result["isError"] else "ok")
            except RpcError as exc:
                outcomes.append(str(exc.code))
        while time.monotonic() < until:
            await asyncio.gather(*(one() for _ in range(8)))  # 8 pipelined at a time

    async def scenario() -> tuple[list[float], list[str], int]:
        bad = await AsyncAgentClient.tcp(*tcp_address(d), MALLORY)
        good = await AsyncAgentClient.tcp(*tcp_address(d), TOKENS["bob"])
        outcomes: list[str] = []
        latencies: list[float] = []
        failures = 0
        try:
            until = time.monotonic() + 4.0
            storming = asyncio.ensure_future(storm(bad, until, outcomes))
            while time.monotonic() < until:
                started = time.monotonic()
                result = await good.call_tool("echo", {"n": len(latencies)})
                latencies.append(time.monotonic() - started)
                failures += bool(result["isError"])
                await asyncio.sleep(0.02)
            await storming
        finally:
            await bad.close()
            await good.close()
        return latencies, outcomes, failures

    latencies, outcomes, failures = asyncio.run(scenario())
    worst = max(latencies)
    print(f"good agent: {len(latencies)} calls, worst {worst * 1000:.0f} ms, bad agent: "
          f"{outcomes.count('denied')} denied, {outcomes.count('-32019')} quarantined")
    assert failures == 0 and len(latencies) > 20
    # within budget + grace (measured ~250 ms on a quiet machine; the README has it)
    assert worst < (BUDGET_MS + STORM_GRACE_MS) / 1000, f"worst latency {worst * 1000:.0f} ms"
    assert "denied" in outcomes and "-32019" in outcomes
    assert worker_state(d, shard("bob"))[0] == pid  # interrupted in place, never replaced
    assert os.path.exists(d.state_dir / "run" / "slots")
