"""An upstream MCP server that restarts or gives up (issue 10, part 2).

While it restarts, its tools stay listed and a call waits for it (within the call's
timeout); one that gave up is probed again by itself (half-open, capped backoff) and comes
back without an admin; meanwhile `status` says DEGRADED (exit 3) with the reason, and
/metrics shows the upstream down."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from daemon.protocol.jsonrpc import RpcError
from tests.conftest import wait_for
from tests.gateway_helpers import agent, gateway_config, shard
from tests.test_observability import scrape, value

FLAKY = Path(__file__).parent / "fixtures" / "flaky_upstream.py"


def flaky_config(flags: Path, **gateway: object) -> dict[str, dict[str, object]]:
    config = gateway_config(**gateway)
    config["upstreams.flaky"] = {"command": [sys.executable, str(FLAKY), str(flags)]}
    return config


def kill_the_server(d) -> None:
    """kill -9 the upstream's MCP server (not its worker)."""
    worker = d.workers()["mcp:flaky"]
    servers = psutil.Process(worker["pid"]).children()
    assert len(servers) == 1
    os.kill(servers[0].pid, signal.SIGKILL)


def call_add(d) -> object:
    with agent(d, "bob") as bob:
        try:
            return bob.call_tool("flaky__add", {"a": 3, "b": 4})["content"][0]["text"]
        except RpcError as exc:
            return exc


def restarting(d) -> None:
    wait_for(lambda: d.workers()["mcp:flaky"]["state"] != "ready", 10,
             "the master to see the upstream restart")


def gave_up(d) -> bool:
    tools = next(c for c in d.status()["tree"]["children"] if c["name"] == "tools")
    return any(c["name"] == "upstream:flaky" and c["state"] == "stopped"
               for c in tools["children"])


def test_while_an_upstream_restarts_its_tools_stay_listed_and_calls_wait_for_it(
        start_daemon, state_dir):
    d = start_daemon(extra=flaky_config(state_dir, tool_timeouts={"flaky__read_note": 0.5}))
    d.wait_ready(timeout=60)
    with agent(d, "bob") as bob:
        assert bob.call_tool("flaky__add", {"a": 1, "b": 1})["content"][0]["text"] == "2"
        gateway_pid = d.workers()[shard("bob")]["pid"]
        (state_dir / "slow").write_text("2.5")  # the restart takes 2.5 s and more
        kill_the_server(d)
        restarting(d)
        names = [t["name"] for t in bob.list_tools()]
        assert "flaky__add" in names, "the last known tools stay listed during a restart"
        started = time.monotonic()
        with pytest.raises(RpcError) as err:  # its timeout (0.5 s) ends before the restart
            bob.call_tool("flaky__read_note", {"name": "hello"})
        assert err.value.code == -32015 and "restarting" in err.value.message
        assert time.monotonic() - started < 10
        # a call that waits has not started its tool: if its gateway worker dies, the
        # call goes to the replacement (not -32014)
        answers: list[object] = []
        waiting = threading.Thread(target=lambda: answers.append(call_add(d)))
        waiting.start()
        time.sleep(0.3)
        os.kill(gateway_pid, signal.SIGKILL)
        waiting.join(30)
        assert answers == ["7"]
        result = bob.call_tool("flaky__add", {"a": 3, "b": 4})
        assert result["content"][0]["text"] == "7"
        assert not [n for n in bob.notifications
                    if n["method"] == "notifications/tools/list_changed"], \
            "the same tools came back: nothing changed for the agent"
    audit = (state_dir / "audit").glob("audit-*.jsonl")
    records = [json.loads(line) for f in audit for line in f.read_text().splitlines()]
    waited = [r for r in records if r.get("tool") == "flaky__read_note"]
    assert [r["kind"] for r in waited] == ["call"], "no intent: the tool never started"


def test_an_upstream_that_gave_up_is_probed_and_comes_back_by_itself(start_daemon, state_dir):
    (state_dir / "fail").touch()
    d = start_daemon(extra=flaky_config(state_dir), supervision={"max_restarts": 1})
    d.wait_ready(timeout=60)
    wait_for(lambda: gave_up(d), 30, "the upstream to give up")

    def degraded() -> subprocess.CompletedProcess[str] | None:  # not caught mid-probe
        out = d.cli("status")
        return out if "upstream flaky: down since" in out.stdout else None
    out = wait_for(degraded, 30, "status to say why")
    assert out.returncode == 3, out.stderr
    assert "DEGRADED" in out.stdout and "next try in" in out.stdout
    snap = json.loads(d.cli("status", "--json").stdout)
    assert snap["health"] == "degraded"
    assert any(r.startswith("upstream flaky: ") for r in snap["reasons"])
    watched = d.cli("status", "--watch", "--interval", "0.1", "--count", "1")
    assert watched.returncode == 3 and "DEGRADED" in watched.stdout
    assert snap["daemon"]["healthy"], "the tree serves: the watchdog keeps being fed"
    assert value(scrape(d), "workingagents_upstream_up", upstream="flaky") == 0
    with agent(d, "bob") as bob:
        def refused() -> RpcError | None:
            with pytest.raises(RpcError) as err:
                bob.call_tool("flaky__add", {"a": 3, "b": 4})
            # a call that lands on a probe waits for it and may hear only "retry later"
            return err.value if "next try in" in err.value.message else None
        assert wait_for(refused, 20, "a -32015 that says when the next try is").code == -32015
        wait_for(lambda: "probe" in d.log(), 30, "a probe that fails while the flag is set")
        (state_dir / "fail").unlink()
        wait_for(lambda: "flaky__add" in [t["name"] for t in bob.list_tools()], 60,
                 "a probe to bring the upstream back, with no admin")
        assert bob.call_tool("flaky__add", {"a": 3, "b": 4})["content"][0]["text"] == "7"
    out = d.cli("status")
    assert out.returncode == 0 and "healthy" in out.stdout and "DEGRADED" not in out.stdout
    assert json.loads(d.cli("status", "--json").stdout)["health"] == "healthy"
    assert value(scrape(d), "workingagents_upstream_up", upstream="flaky") == 1
    assert "restart upstream:flaky" not in d.log()
