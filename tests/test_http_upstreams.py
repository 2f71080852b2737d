"""Upstream MCP servers over Streamable HTTP (issue 13): an official-SDK server run with
`streamable-http`, configured as `[upstreams.web] url = ...` with its API key in
`headers_env`, serves agents through the gateway in both eras: tools listed as web__*,
calls, progress, cancellation, and a server that goes away and comes back; its key never
shows in the log, `status` or the audit log."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from daemon import config
from daemon.protocol.jsonrpc import RpcError
from tests.conftest import wait_for, write_config
from tests.gateway_helpers import agent, gateway_config
from tests.local_servers import free_port, wait_listening

SERVER = Path(__file__).parent / "fixtures" / "http_mcp_upstream.py"
API_KEY = "web-key-0f3a9c1d77e2"  # what the server wants in X-Api-Key


class WebServer:
    """The fixture server in a subprocess, on a fixed port so that it can come back."""

    def __init__(self, flags: Path, legacy: bool) -> None:
        self.flags, self.legacy, self.port = flags, legacy, free_port()
        self.url = f"http://127.0.0.1:{self.port}/mcp"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(SERVER), str(self.port), str(self.flags),
             *(["--legacy"] if self.legacy else [])],
            env={**os.environ, "FIXTURE_API_KEY": API_KEY},
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_listening(self.proc, self.port, "the HTTP MCP server")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)


@pytest.fixture(params=["legacy", "modern"])
def web(request: pytest.FixtureRequest, state_dir: Path) -> Iterator[WebServer]:
    flags = state_dir / "flags"
    flags.mkdir()
    server = WebServer(flags, legacy=request.param == "legacy")
    server.start()
    yield server
    server.kill()


def web_config(web: WebServer, **gateway: Any) -> dict[str, dict[str, Any]]:
    extra = gateway_config(**gateway)
    extra["upstreams.web"] = {"url": web.url, "headers_env": {"X-Api-Key": "WEB_API_KEY"},
                              "timeout": 5.0}
    return extra


def start_with_web(start_daemon: Any, web: WebServer, **kwargs: Any) -> Any:
    d = start_daemon(extra=web_config(web), env={"WEB_API_KEY": API_KEY}, **kwargs)
    d.wait_ready(timeout=60)
    wait_for(lambda: d.status()["upstreams"].get("web", {}).get("state") == "up", 30,
             "the HTTP upstream to be up")
    return d


def test_an_http_upstream_serves_tools_progress_and_cancellation_through_the_gateway(
        start_daemon, state_dir, web):
    d = start_with_web(start_daemon, web)
    era = "2025-11-25" if web.legacy else "2026-07-28"
    assert f"web: MCP {era}, 3 tools" in d.log()
    with agent(d, "bob") as bob:
        names = [t["name"] for t in bob.list_tools()]
        assert {"web__add", "web__slow", "web__steps"} <= set(names)
        assert bob.call_tool("web__add", {"a": 20, "b": 22})["content"][0]["text"] == "42"
        result = bob.request("tools/call", {"name": "web__steps", "arguments": {"count": 3},
                                            "_meta": {"progressToken": "p-1"}})
        assert result["content"][0]["text"] == "3 steps"
        progress = [n["params"] for n in bob.notifications
                    if n["method"] == "notifications/progress"]
        assert [(p["progressToken"], p["progress"], p["total"]) for p in progress] == [
            ("p-1", 1, 3), ("p-1", 2, 3), ("p-1", 3, 3)]
        rid, raw = bob.build("tools/call", {"name": "web__slow", "arguments": {"seconds": 60}})
        bob.send_raw(raw)
        wait_for(lambda: (web.flags / "slow-started").exists(), 10, "the slow call to start")
        bob.notify("notifications/cancelled", {"requestId": rid})
        wait_for(lambda: (web.flags / "slow-cancelled").exists(), 10,
                 "the call to be cancelled upstream")
        assert bob.call_tool("web__add", {"a": 1, "b": 1})["content"][0]["text"] == "2"
    assert not (web.flags / "refused").exists(), "every request carried the key"
    # the key is a secret: not in the log, status or the audit log
    assert API_KEY not in d.log()
    snapshot = d.cli("status", "--json").stdout
    assert '"web"' in snapshot and API_KEY not in snapshot + d.cli("status").stdout
    audit = "".join(f.read_text() for f in (state_dir / "audit").glob("audit-*.jsonl"))
    assert "web__add" in audit and API_KEY not in audit


def test_an_http_upstream_that_goes_away_answers_minus_32015_only_after_the_restart_wait_and_comes_back(  # noqa: E501
        start_daemon, web):
    d = start_with_web(start_daemon, web, supervision={"max_restarts": 2})
    with agent(d, "bob") as bob:
        assert bob.call_tool("web__add", {"a": 1, "b": 2})["content"][0]["text"] == "3"
        web.kill()

        def refused() -> RpcError | None:
            try:
                bob.call_tool("web__add", {"a": 1, "b": 2})
            except RpcError as exc:
                return exc if exc.code == -32015 and "next try in" in exc.message else None
            return None
        err = wait_for(refused, 60, "-32015 once the upstream's supervisor gave up")
        assert "restart intensity exceeded" in d.log() or "gave up" in d.log()
        assert "unreachable" in err.message or "unreachable" in d.log()
        web.start()
        wait_for(lambda: "web__add" in [t["name"] for t in bob.list_tools()], 90,
                 "a probe to bring the upstream back")
        assert bob.call_tool("web__add", {"a": 2, "b": 3})["content"][0]["text"] == "5"
        changed = [n for n in bob.notifications
                   if n["method"] == "notifications/tools/list_changed"]
        assert len(changed) >= 2, "told when its tools went, and when they came back"
    assert API_KEY not in d.log()


def test_a_wrong_key_is_a_clear_start_failure_that_names_no_secret(start_daemon, web):
    d = start_daemon(extra=web_config(web), env={"WEB_API_KEY": "not-the-key-5b1e"},
                     supervision={"max_restarts": 1})
    d.wait_ready(timeout=60)
    wait_for(lambda: "upstream web (http://127.0.0.1" in d.log() and "HTTP 401" in d.log(),
             30, "a log line that says the server refused the key")
    assert "not-the-key-5b1e" not in d.log()
    assert (web.flags / "refused").exists()


@pytest.mark.parametrize("table, message", [
    ({"url": "http://127.0.0.1:1/mcp", "command": ["x"]}, "exactly one of command"),
    ({}, "exactly one of command"),
    ({"url": "ftp://example.com/mcp"}, "an http:// or https:// URL"),
    ({"url": "http://h/mcp", "secret_env": {"A": "B"}}, "env, secret_env and cwd only"),
    ({"command": ["x"], "headers_env": {"Authorization": "T"}}, "headers only with url"),
    ({"url": "http://h/mcp", "headers_env": {"Bad Header": "T"}}, "HTTP header names"),
    ({"url": "http://h/mcp", "headers_env": {"Authorization": "not a name"}},
     "the name of an environment variable"),
    ({"url": "http://h/mcp", "timeout": 0}, "a number > 0"),
])
def test_an_upstream_table_takes_exactly_one_of_command_and_url(tmp_path, table, message):
    path = tmp_path / "wa.toml"
    write_config(path, {"upstreams.web": table})
    with pytest.raises(config.ConfigError, match=r"upstreams\.web") as err:
        config.load(str(path))
    assert message in str(err.value)


def test_a_missing_header_secret_refuses_the_start_and_names_the_key(start_daemon, state_dir):
    extra = web_config(WebServer(state_dir, legacy=False))  # never started: not reached
    d = start_daemon(extra=extra, env={"CREDENTIALS_DIRECTORY": "/nonexistent"})
    assert d.wait_exit(30) == 1
    assert "key upstreams.web.headers_env.X-Api-Key" in d.log()
    assert "WEB_API_KEY is not set" in d.log()
