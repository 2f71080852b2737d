"""``[upstreams.NAME] protocol``: which MCP era the gateway speaks to an upstream.

"auto" takes 2026-07-28 when the server offers it; "2025-11-25" keeps a handshake-era
session (the only era in which a server's tools can ask the client back: sampling,
elicitation); "2026-07-28" refuses a server that does not speak it, with a log line that
says so.
"""

from __future__ import annotations

import hashlib
import re
import sys
from pathlib import Path

import pytest

from daemon import config
from daemon.client import AgentClient
from tests.conftest import wait_for
from tests.gateway_helpers import TOKENS, tcp_address
from tests.local_servers import Upstream

LIVE = Path(__file__).parent / "fixtures" / "live_upstream.py"


def started(start_daemon, table: dict[str, object]):
    d = start_daemon(extra={"roles.ops": {"tools": ["*"]},
                            "agents.bob": {"token_sha256": hashlib.sha256(
                                TOKENS["bob"].encode()).hexdigest(),
                                           "roles": ["ops"]},
                            "upstreams.live": table})
    d.wait_ready(timeout=60)
    return d


@pytest.mark.parametrize("protocol, era", [(None, "2026-07-28"), ("auto", "2026-07-28"),
                                           ("2025-11-25", "2025-11-25")])
def test_a_server_of_both_eras_is_spoken_to_in_the_era_the_config_asks(start_daemon,
                                                                       protocol, era):
    table: dict[str, object] = {"command": [sys.executable, str(LIVE)]}
    if protocol is not None:
        table["protocol"] = protocol
    d = started(start_daemon, table)
    wait_for(lambda: f"live: MCP {era}," in d.log(), 20, f"the upstream in MCP {era}")
    with AgentClient.tcp(*tcp_address(d), TOKENS["bob"], timeout=30) as bob:
        names = [t["name"] for t in bob.request("tools/list", {})["tools"]]
        assert "live__touch" in names


def test_a_handshake_only_server_does_not_start_when_2026_07_28_is_required(start_daemon,
                                                                            state_dir):
    server = Upstream("legacy", state_dir / "live.log")
    try:
        d = start_daemon(extra={"upstreams.live": {**server.table,
                                                   "protocol": "2026-07-28"}})
        d.wait_ready(timeout=60)
        wait_for(lambda: "does not speak MCP 2026-07-28" in d.log(), 30,
                 "the upstream's refusal in the log")
        assert "did not start" in d.log()
    finally:
        server.stop()


def test_an_unknown_protocol_is_refused_with_the_values_it_may_take(tmp_path):
    path = tmp_path / "wa.toml"
    path.write_text('[upstreams.a]\ncommand = ["x"]\nprotocol = "2025-06-18"\n')
    expected = 'key upstreams.a.protocol: expected "auto" or "2025-11-25" or "2026-07-28"'
    with pytest.raises(config.ConfigError, match=re.escape(expected)):
        config.load(str(path))
