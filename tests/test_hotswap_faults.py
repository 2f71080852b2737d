"""A plugin swap while a gateway worker hangs or dies: the swap neither stalls nor is
refused for it, and the replacement serves the new version too."""

from __future__ import annotations

import contextlib
import os
import signal
import time

from tests.conftest import wait_for
from tests.gateway_helpers import agent, gateway_config, shard
from tests.plugin_versions import COUNTER_V1, COUNTER_V2
from tests.test_plugins import drop, loaded


def test_a_swap_while_a_worker_is_stopped_goes_live_once_it_is_replaced(start_daemon,
                                                                         state_dir):
    plugin_dir = state_dir / "plugins"
    plugin_dir.mkdir(mode=0o755)
    drop(plugin_dir, "counter", COUNTER_V1)
    config = gateway_config()
    config["plugins"] = {"dirs": [str(plugin_dir)], "snapshot_interval": 0.2}
    d = start_daemon(extra=config)
    d.wait_ready()
    wait_for(lambda: loaded(d).get("counter") == 1, 20, "counter v1")
    frozen = d.pids()[shard("bob")]
    os.kill(frozen, signal.SIGSTOP)
    try:
        started = time.monotonic()
        drop(plugin_dir, "counter", COUNTER_V2)
        # the stopped worker is killed as hung (heartbeat timeout 1 s) and stops
        # holding the swap up; before, the swap waited 15 s for it and was refused
        wait_for(lambda: loaded(d).get("counter") == 2, 10, "counter v2 to serve")
        took = time.monotonic() - started
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(frozen, signal.SIGCONT)
    assert took < 10
    assert d.status()["plugins"]["refused"] == {}
    for name in ("bob", "alice"):  # one on each gateway worker, the replacement included
        with agent(d, name) as client:
            text = client.call_tool("echo", {"x": 1})["content"][0]["text"]
            assert "[v2 #" in text, (name, text)
