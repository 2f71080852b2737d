"""A token authenticates what it was presented on, and nothing else: the connection it
came with in `initialize`, or the one request that carried it in `_meta`."""

from __future__ import annotations

import socket

import orjson
import pytest
import zmq

from daemon.client import AgentClient
from daemon.protocol import mcp
from daemon.protocol.jsonrpc import RpcError
from tests.conftest import wait_for
from tests.gateway_helpers import TOKENS, listen, tcp_address
from tests.security.conftest import client

UNAUTHENTICATED = -32010


def raw_request(rid: int, method: str, params: dict | None = None) -> bytes:
    return orjson.dumps({"jsonrpc": "2.0", "id": rid, "method": method,
                         "params": params or {}})


def echo_request(rid: int, meta: dict | None = None) -> bytes:
    params: dict = {"name": "echo", "arguments": {"rid": rid}}
    if meta is not None:
        params["_meta"] = meta
    return raw_request(rid, "tools/call", params)


def tcp_exchange(daemon, *lines: bytes) -> list[dict]:
    """Send lines on a new TCP connection; one answer per line."""
    with socket.create_connection(tcp_address(daemon), timeout=30) as sock:
        reader = sock.makefile("rb")
        answers = []
        for line in lines:
            sock.sendall(line + b"\n")
            answers.append(orjson.loads(reader.readline()))
        return answers


@pytest.mark.parametrize("transport", ["tcp", "zmq"])
def test_a_token_in_initialize_authenticates_only_that_connection(gateway, transport):
    with client(gateway, "bob", transport) as bob:
        assert bob.call_tool("echo", {"x": 1})["isError"] is False
        with AgentClient.tcp(*tcp_address(gateway), None, stateless=True) if transport == "tcp" \
                else AgentClient.zmq(listen(gateway)["zmq"], None, stateless=True) as other:
            with pytest.raises(RpcError) as refused:
                other.call_tool("echo", {"x": 2})
            assert refused.value.code == UNAUTHENTICATED
            with pytest.raises(RpcError) as listing:
                other.list_tools()
            assert listing.value.code == UNAUTHENTICATED
        assert bob.call_tool("echo", {"x": 3})["isError"] is False


def test_a_meta_token_authenticates_only_the_request_that_carries_it(gateway):
    meta = {mcp.META_TOKEN: TOKENS["bob"]}
    answers = tcp_exchange(gateway, echo_request(1, meta), echo_request(2),
                           echo_request(3, {mcp.META_TOKEN: "not-a-token"}))
    assert "result" in answers[0]
    assert [a["error"]["code"] for a in answers[1:]] == [UNAUTHENTICATED] * 2


def test_a_meta_token_on_an_authenticated_connection_speaks_for_that_request_only(gateway):
    init = raw_request(1, "initialize", {
        "protocolVersion": mcp.LATEST_HANDSHAKE, "capabilities": {},
        "clientInfo": {"name": "t", "version": "1"}, "_meta": {mcp.META_TOKEN: TOKENS["alice"]}})
    # alice (echo only) asks once as bob, then as herself, then with a wrong token
    hidden = raw_request(2, "tools/call", {"name": "notes__add", "arguments": {},
                                           "_meta": {mcp.META_TOKEN: TOKENS["bob"]}})
    as_alice = raw_request(3, "tools/call", {"name": "notes__add", "arguments": {}})
    wrong = raw_request(4, "tools/call", {"name": "echo", "arguments": {},
                                          "_meta": {mcp.META_TOKEN: "wrong"}})
    answers = tcp_exchange(gateway, init, hidden, as_alice, wrong)
    assert "result" in answers[0] and "result" in answers[1]
    assert answers[2]["error"] == {"code": -32602, "message": "Unknown tool: notes__add"}
    assert answers[3]["error"]["code"] == UNAUTHENTICATED, "no fallback to the connection's"


def test_a_failed_initialize_does_not_authenticate_the_connection(gateway):
    init = raw_request(1, "initialize", {
        "protocolVersion": mcp.LATEST_HANDSHAKE, "capabilities": {},
        "clientInfo": {"name": "t", "version": "1"}, "_meta": {mcp.META_TOKEN: "wrong"}})
    answers = tcp_exchange(gateway, init, echo_request(2))
    assert [a["error"]["code"] for a in answers] == [UNAUTHENTICATED] * 2


def test_a_zmq_peer_reusing_a_gone_peers_routing_id_does_not_inherit_its_session(gateway):
    """ZeroMQ tells the ROUTER nothing when a peer goes: a newcomer that picks the same
    routing id must still authenticate."""
    endpoint = listen(gateway)["zmq"]
    ctx = zmq.Context.instance()
    for routing_id in (b"victim-session", b"\x00\x12\x34\x56\x78"):  # chosen, and auto-style
        victim = ctx.socket(zmq.DEALER)
        victim.setsockopt(zmq.ROUTING_ID, routing_id)
        victim.setsockopt(zmq.LINGER, 0)
        victim.connect(endpoint)
        victim.send(raw_request(1, "initialize", {
            "protocolVersion": mcp.LATEST_HANDSHAKE, "capabilities": {},
            "clientInfo": {"name": "t", "version": "1"},
            "_meta": {mcp.META_TOKEN: TOKENS["bob"]}}))
        assert victim.poll(10_000) and "result" in orjson.loads(victim.recv())
        victim.close()

        def intruder_answer(routing_id: bytes = routing_id) -> dict | None:
            intruder = ctx.socket(zmq.DEALER)
            intruder.setsockopt(zmq.ROUTING_ID, routing_id)
            intruder.setsockopt(zmq.LINGER, 0)
            intruder.connect(endpoint)
            try:
                intruder.send(echo_request(7))
                # while libzmq still holds the victim's pipe, the intruder is ignored
                return orjson.loads(intruder.recv()) if intruder.poll(1000) else None
            finally:
                intruder.close()
        answer = wait_for(intruder_answer, 20, "the intruder to be heard")
        assert answer.get("error", {}).get("code") == UNAUTHENTICATED, answer
