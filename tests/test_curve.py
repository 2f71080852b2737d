"""CurveZMQ: agents on `[listen] zmq_curve` authenticate by a registered key instead of a
token; the worker bus and the control endpoint speak Curve when they are on tcp://; the
daemon's keys live in <state_dir>/curve."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import stat
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
import zmq
import zmq.auth

from daemon import config
from daemon.client import AgentClient, AsyncAgentClient
from daemon.protocol.jsonrpc import RpcError
from tests.conftest import Daemon, wait_for, write_config
from tests.gateway_helpers import TOKENS, agent, gateway_config, listen, shard

CAROL = zmq.curve_keypair()  # (public, secret), Z85 bytes
ROBOT = zmq.curve_keypair()
LISTEN = {"tcp": "127.0.0.1:0", "zmq": "tcp://127.0.0.1:*", "zmq_curve": "tcp://127.0.0.1:*"}


def curve_config() -> dict[str, dict[str, Any]]:
    return {**gateway_config(), "listen": LISTEN,
            "agents.carol": {"curve_public_key": CAROL[0].decode(), "roles": ["analyst"]}}


def server_public(state_dir: Path) -> bytes:
    return zmq.auth.load_certificate(state_dir / "curve" / "server.key")[0]


def curve_agent(d: Daemon, keys: tuple[bytes, bytes], **kwargs: Any) -> AgentClient:
    return AgentClient.zmq_curve(listen(d)["zmq_curve"], server_public(d.state_dir), *keys,
                                 timeout=10, **kwargs)


def plain_dealer(endpoint: str, ctx: zmq.Context[zmq.Socket[bytes]]) -> zmq.Socket[bytes]:
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    return sock


@pytest.fixture
def ctx() -> Any:
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    yield context
    context.destroy(linger=0)


def test_a_registered_curve_key_stands_for_the_token_and_survives_a_restart(start_daemon,
                                                                             state_dir):
    d = start_daemon(extra=curve_config())
    d.wait_ready()
    keys = state_dir / "curve"
    assert stat.S_IMODE(keys.stat().st_mode) == 0o700
    for name in ("server", "client"):
        assert stat.S_IMODE((keys / f"{name}.key_secret").stat().st_mode) == 0o600
        public, secret = zmq.auth.load_certificate(keys / f"{name}.key_secret")
        assert secret and zmq.curve_public(secret) == public
    first_key = server_public(state_dir)

    for stateless in (False, True):
        with curve_agent(d, CAROL, stateless=stateless) as carol:
            result = carol.call_tool("echo", {"text": "hi"})
            assert result["isError"] is False and '"hi"' in result["content"][0]["text"]
            assert [t["name"] for t in carol.list_tools()] == ["echo"]  # carol's roles
            with pytest.raises(RpcError) as hidden:
                carol.call_tool("sleep", {"seconds": 0})
            assert hidden.value.code == -32602
    with agent(d, "bob", transport="zmq") as bob:  # tokens on [listen] zmq keep working
        assert bob.call_tool("echo", {"n": 1})["isError"] is False

    d.stop()
    again = start_daemon(extra=curve_config())
    again.wait_ready()
    assert server_public(state_dir) == first_key  # agents keep the server key they were given
    with curve_agent(again, CAROL) as carol:
        assert carol.call_tool("echo", {})["isError"] is False


def test_an_unknown_key_or_a_plain_client_gets_nothing_through(start_daemon, ctx):
    d = start_daemon(extra=curve_config())
    d.wait_ready()
    with pytest.raises(ConnectionRefusedError):
        curve_agent(d, zmq.curve_keypair())
    plain = plain_dealer(listen(d)["zmq_curve"], ctx)
    plain.send(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {
        "_meta": {"io.workingagents/token": TOKENS["bob"]}}}).encode())
    assert not plain.poll(1500), "a client without Curve must get no answer"
    assert "refused on workingagents.agents: key not registered" in d.log()
    with curve_agent(d, CAROL) as carol:  # and the endpoint still serves its agents
        assert carol.call_tool("echo", {})["isError"] is False


def test_the_asyncio_client_authenticates_by_key_too(start_daemon):
    d = start_daemon(extra=curve_config())
    d.wait_ready()

    async def calls() -> list[dict[str, Any]]:
        async with await AsyncAgentClient.zmq_curve(
                listen(d)["zmq_curve"], server_public(d.state_dir), *CAROL) as carol:
            return list(await asyncio.gather(*(carol.call_tool("echo", {"i": i})
                                               for i in range(20))))

    results = asyncio.run(calls())
    assert all(r["isError"] is False for r in results) and len(results) == 20


def test_a_token_in_meta_is_still_checked_on_a_curve_connection(start_daemon):
    d = start_daemon(extra=curve_config())
    d.wait_ready()
    with curve_agent(d, CAROL, stateless=True) as carol:
        with pytest.raises(RpcError) as bad:
            carol.request("tools/call", {"name": "echo", "arguments": {},
                                         "_meta": {"io.workingagents/token": "wrong"}})
        assert bad.value.code == -32010
        as_bob = carol.request("tools/call", {"name": "sleep", "arguments": {"seconds": 0},
                                              "_meta": {"io.workingagents/token":
                                                        TOKENS["bob"]}})
        assert as_bob["isError"] is False  # bob's roles (ops) allow sleep; carol's do not


def test_a_key_added_or_removed_by_a_reload_applies_to_new_requests(start_daemon, state_dir):
    d = start_daemon(extra=curve_config())
    d.wait_ready()
    with pytest.raises(ConnectionRefusedError):
        curve_agent(d, ROBOT)
    agents_d = state_dir / "agents.d"
    agents_d.mkdir(mode=0o700)
    robot_file = agents_d / "robot.toml"
    robot_file.write_text(f'[agents.robot]\ncurve_public_key = "{ROBOT[0].decode()}"\n'
                          'roles = ["analyst"]\n')
    assert d.cli("reload").returncode == 0
    robot = curve_agent(d, ROBOT)
    try:
        assert robot.call_tool("echo", {})["isError"] is False
        robot_file.unlink()
        assert d.cli("reload").returncode == 0
        with pytest.raises(RpcError) as gone:  # the open connection loses access at once
            robot.call_tool("echo", {})
        assert gone.value.code == -32010 and "no longer registered" in gone.value.message
    finally:
        robot.close()
    with pytest.raises(ConnectionRefusedError):
        curve_agent(d, ROBOT)


def test_a_tcp_control_endpoint_answers_only_clients_with_the_daemons_keys(start_daemon, ctx,
                                                                            state_dir):
    d = start_daemon(control={"endpoint": "tcp://127.0.0.1:*"})
    d.wait_ready()  # the CLI reads the client key from the state dir
    info = json.loads((state_dir / "control.json").read_text())
    assert info["endpoint"].startswith("tcp://127.0.0.1:")
    request = json.dumps({"id": 1, "token": info["token"], "cmd": "status"}).encode()
    plain = plain_dealer(info["endpoint"], ctx)  # even with the right control token
    stranger = ctx.socket(zmq.DEALER)
    stranger.setsockopt(zmq.LINGER, 0)
    stranger.curve_serverkey = server_public(state_dir)
    stranger.curve_publickey, stranger.curve_secretkey = zmq.curve_keypair()
    stranger.connect(info["endpoint"])
    for sock in (plain, stranger):
        sock.send(request)
    assert not plain.poll(1500) and not stranger.poll(100)
    assert "refused on workingagents.internal" in d.log()
    out = d.cli("status")
    assert out.returncode == 0, out.stderr


def test_the_cli_without_the_keys_says_so_in_one_line(start_daemon, state_dir):
    d = start_daemon(control={"endpoint": "tcp://127.0.0.1:*"})
    d.wait_ready()
    secret = state_dir / "curve" / "client.key_secret"
    secret.rename(secret.with_suffix(".moved"))
    try:
        out = d.cli("status")
    finally:
        secret.with_suffix(".moved").rename(secret)
    assert out.returncode == 1 and out.stderr.count("\n") == 1
    assert "cannot read the daemon's Curve keys" in out.stderr


def test_a_daemon_with_a_tcp_bus_answers_calls_restarts_a_worker_and_lets_no_one_else_in(
        start_daemon, ctx):
    d = start_daemon(supervision={"bus_endpoint": "tcp://127.0.0.1:*"},
                     extra=gateway_config())
    d.wait_ready()
    with agent(d, "bob") as bob:
        assert bob.call_tool("echo", {"n": 1})["isError"] is False
        worker = shard("bob")
        old = d.pids()[worker]
        os.kill(old, signal.SIGKILL)
        wait_for(lambda: d.pids().get(worker) not in (None, old), 15, "a restart over tcp")
        assert bob.call_tool("echo", {"n": 2})["isError"] is False

    published = {int(str(a).rpartition(":")[2]) for a in listen(d).values() if a}
    ports = {c.laddr.port for c in psutil.Process(d.pid).net_connections("tcp")
             if c.status == psutil.CONN_LISTEN} - published
    assert ports, "the bus listens on a tcp port of its own"
    probes = [plain_dealer(f"tcp://127.0.0.1:{port}", ctx) for port in ports]
    for probe in probes:  # on an ipc:// bus, this junk is logged as "dropping bus message"
        probe.send(b"{forged")
    time.sleep(1.0)
    assert "dropping bus message" not in d.log()
    assert d.status()["daemon"]["healthy"]


@pytest.mark.parametrize("agent_table, expected", [
    ({"curve_public_key": "not-a-key", "roles": []},
     "key agents.zed.curve_public_key: expected a Curve public key, 40 characters of Z85"),
    ({"curve_public_key": "#" * 40, "roles": []}, "expected a Curve public key"),
    ({"roles": []}, "key agents.zed: expected token_sha256 or curve_public_key (or both)"),
    ({"curve_public_key": CAROL[0].decode(), "roles": []},
     "key agents.zed.curve_public_key: expected a key no other agent has"),
])
def test_a_bad_or_missing_agent_key_is_refused_in_one_line(tmp_path, agent_table, expected):
    path = write_config(tmp_path / "wa.toml", {**curve_config(), "agents.zed": agent_table})
    with pytest.raises(config.ConfigError) as err:
        config.load(str(path))
    assert str(err.value).startswith(f"{path}: ") and expected in str(err.value)
    assert "\n" not in str(err.value) and "not-a-key" not in str(err.value)


def test_an_agent_may_have_a_key_a_token_or_both(tmp_path):
    both = {**gateway_config()["agents.bob"], "curve_public_key": ROBOT[0].decode()}
    path = write_config(tmp_path / "wa.toml", {**curve_config(), "agents.bob": both})
    agents = config.load(str(path)).config.agents
    assert agents["carol"].token_sha256 == "" and agents["bob"].curve_public_key


def test_curve_keypair_prints_a_fresh_pair_and_where_the_server_key_is(tmp_path):
    from tests.test_agents_admin import cli

    path = write_config(tmp_path / "wa.toml", {"daemon": {"state_dir": str(tmp_path)}})
    out = cli(path, "agents", "curve-keypair")
    assert out.returncode == 0, out.stderr
    lines = dict(line.split(" = ", 1) for line in out.stdout.splitlines())
    public, secret = (lines[k].strip('"').encode() for k in ("curve_public_key", "secret"))
    assert zmq.curve_public(secret) == public
    assert str(tmp_path / "curve" / "server.key") in out.stderr
