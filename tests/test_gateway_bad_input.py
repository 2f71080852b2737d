"""Bad input on either transport gets the right JSON-RPC error (or a closed connection
for the unreadable), and every other agent is served undisturbed."""

from __future__ import annotations

import json
import os
import socket
import time

import pytest
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.gateway_helpers import TOKENS, agent, gateway_config, listen, tcp_address


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    import shutil
    import tempfile
    from pathlib import Path

    from tests.conftest import Daemon
    state = Path(tempfile.mkdtemp(prefix="wa-", dir="/tmp"))
    d = Daemon(state, extra={**gateway_config(), "listen": {
        "tcp": "127.0.0.1:0", "zmq": "tcp://127.0.0.1:*", "max_message_bytes": 65536}})
    try:
        d.wait_ready()
        yield d
    finally:
        d.stop()
        shutil.rmtree(state, ignore_errors=True)


class Line:
    """A raw TCP shim connection: bytes in, one parsed reply per line out."""

    def __init__(self, daemon) -> None:
        self.sock = socket.create_connection(tcp_address(daemon), timeout=5)
        self.file = self.sock.makefile("rb")

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def reply(self) -> dict:
        line = self.file.readline()
        assert line, "connection closed"
        return json.loads(line)

    def close(self) -> None:
        self.file.close()
        self.sock.close()


def error_of(reply: dict) -> tuple[object, int]:
    return reply["id"], reply["error"]["code"]


CASES = [
    (b"this is not json", (None, -32700)),
    (b'{"jsonrpc": "2.0", "id": 1, "method": "tools/list"', (None, -32700)),
    (b"\xff\xfe\xfd invalid utf-8", (None, -32700)),
    (b'[{"jsonrpc": "2.0", "id": 1, "method": "ping"}]', (None, -32600)),
    (b"42", (None, -32600)),
    (b'"a string"', (None, -32600)),
    (b'{"id": 1, "method": "ping"}', (1, -32600)),
    (b'{"jsonrpc": "1.0", "id": 1, "method": "ping"}', (1, -32600)),
    (b'{"jsonrpc": "2.0", "id": true, "method": "ping"}', (None, -32600)),
    (b'{"jsonrpc": "2.0", "id": 1.5, "method": "ping"}', (None, -32600)),
    (b'{"jsonrpc": "2.0", "id": {"a": 1}, "method": "ping"}', (None, -32600)),
    (b'{"jsonrpc": "2.0", "id": 2, "method": 7}', (2, -32600)),
    (b'{"jsonrpc": "2.0", "id": 3, "method": "tools/frobnicate"}', (3, -32601)),
    (b'{"jsonrpc": "2.0", "id": 4, "method": "tools/call", "params": [1]}', (4, -32602)),
    (b'{"jsonrpc": "2.0", "id": 5, "method": "tools/call", "params": {"_meta": 3}}',
     (5, -32602)),
    # the master reads a call's head only; what it skipped, the worker's full parse finds
    (b'{"jsonrpc": "2.0", "id": 6, "method": "tools/call", "params": {"name": "echo", '
     b'"arguments": {"x": "\xff"}, "_meta": {"io.workingagents/token": "%b"}}}'
     % TOKENS["bob"].encode(), (None, -32700)),
    (b'{"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": "echo", '
     b'"arguments": {"x": 1e999}, "_meta": {"io.workingagents/token": "%b"}}}'
     % TOKENS["bob"].encode(), (None, -32700)),
    (b'{"jsonrpc": "2.0", "id": 18446744073709551616, "method": "tools/list", "params": '
     b'{"_meta": {"io.workingagents/token": "%b"}}}' % TOKENS["bob"].encode(), (None, -32600)),
]


@pytest.mark.parametrize("data, expected", CASES)
def test_each_malformed_line_gets_the_right_error_and_the_connection_goes_on(daemon, data,
                                                                             expected):
    line = Line(daemon)
    try:
        line.send(data + b"\n")
        assert error_of(line.reply()) == expected
        line.send(b'{"jsonrpc": "2.0", "id": "after", "method": "ping"}\n')
        assert line.reply() == {"jsonrpc": "2.0", "id": "after", "result": {}}
    finally:
        line.close()


def test_bad_tool_call_params_are_invalid_params(daemon):
    with agent(daemon, "bob") as bob:
        for params, needle in (({}, "params.name"), ({"name": 3}, "params.name"),
                               ({"name": "echo", "arguments": [1]}, "arguments")):
            rid, raw = bob.build("tools/call", params)
            bob.send_raw(raw)
            reply = json.loads(bob.recv_raw())
            assert reply["id"] == rid and reply["error"]["code"] == -32602
            assert needle in reply["error"]["message"]


def test_a_reused_in_flight_id_is_refused(daemon):
    line = Line(daemon)
    try:
        line.send(json.dumps({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "_meta": {"io.workingagents/token": TOKENS["bob"]}}}).encode() + b"\n")
        assert "result" in line.reply()
        call = {"jsonrpc": "2.0", "id": 9, "method": "tools/call",
                "params": {"name": "sleep", "arguments": {"seconds": 0.5}}}
        line.send((json.dumps(call) + "\n" + json.dumps(call) + "\n").encode())
        first, second = line.reply(), line.reply()
        assert error_of(first) == (9, -32600) and "already in flight" in first["error"]["message"]
        assert second["id"] == 9 and second["result"]["isError"] is False
    finally:
        line.close()


def test_an_oversized_line_is_refused_and_the_next_line_is_served(daemon):
    line = Line(daemon)
    try:
        line.send(b'{"jsonrpc": "2.0", "id": 1, "method": "ping", "pad": "'
                  + b"x" * 200_000 + b'"}\n')
        reply = line.reply()
        assert error_of(reply) == (None, -32600)
        assert "longer than 65536" in reply["error"]["message"]
        line.send(b'{"jsonrpc": "2.0", "id": 2, "method": "ping"}\n')
        assert line.reply()["id"] == 2
    finally:
        line.close()


def test_binary_garbage_on_tcp_disturbs_no_one(daemon):
    line = Line(daemon)
    with agent(daemon, "alice") as alice:
        line.send(os.urandom(100_000))
        line.sock.close()
        assert alice.call_tool("echo", {"ok": 1})["isError"] is False
    assert daemon.proc.poll() is None


def test_a_client_that_sends_nothing_is_no_bother(daemon):
    quiet = [socket.create_connection(tcp_address(daemon)) for _ in range(50)]
    with agent(daemon, "bob") as bob:
        assert bob.call_tool("echo", {})["isError"] is False
    for s in quiet:
        s.close()


def test_multipart_garbage_and_oversized_frames_on_zmq(daemon):
    ctx = zmq.Context.instance()
    bad = ctx.socket(zmq.DEALER)
    bad.setsockopt(zmq.LINGER, 0)
    bad.connect(listen(daemon)["zmq"])
    try:
        bad.send_multipart([b"\x00\x01", b"garbage", b"more"])
        assert bad.poll(5000)
        reply = json.loads(bad.recv())
        assert error_of(reply) == (None, -32600) and "one JSON-RPC message per frame" in \
            reply["error"]["message"]
        bad.send(b"x" * 100_000)  # over MAXMSGSIZE: libzmq drops this peer
        with agent(daemon, "bob", "zmq") as bob:
            assert bob.call_tool("echo", {"z": 1})["isError"] is False
    finally:
        bad.close()


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12)
frames = st.one_of(
    st.binary(max_size=2000),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.fixed_dictionaries({"jsonrpc": st.just("2.0"), "id": json_values,
                           "method": st.sampled_from(["tools/call", "tools/list", "ping",
                                                      "initialize", "x"]),
                           "params": json_values}).map(lambda v: json.dumps(v).encode()),
)


@settings(max_examples=int(os.environ.get("WA_FUZZ_EXAMPLES", "150")), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture,
                                 HealthCheck.too_slow])
@given(tcp_frames=st.lists(frames, max_size=5), zmq_frames=st.lists(frames, max_size=5))
def test_random_frames_at_both_transports_never_disturb_a_good_agent(daemon, tcp_frames,
                                                                      zmq_frames):
    fuzz_tcp = socket.create_connection(tcp_address(daemon), timeout=5)
    fuzz_zmq = zmq.Context.instance().socket(zmq.DEALER)
    fuzz_zmq.setsockopt(zmq.LINGER, 0)
    fuzz_zmq.connect(listen(daemon)["zmq"])
    try:
        for frame in tcp_frames:
            fuzz_tcp.sendall(frame.replace(b"\n", b" ") + b"\n")
        for frame in zmq_frames:
            fuzz_zmq.send(frame)
        with agent(daemon, "bob", "tcp") as good:
            marker = {"t": time.monotonic()}
            result = good.call_tool("echo", marker)
            assert json.loads(result["content"][0]["text"]) == marker
    finally:
        fuzz_tcp.close()
        fuzz_zmq.close()
    assert daemon.proc.poll() is None
