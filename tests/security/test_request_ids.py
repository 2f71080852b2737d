"""Request ids are per connection: agents that use the same ids, pipelined and
interleaved, on both transports, each get their own answers; an agent that reuses an id
it has in flight gets -32600; a cancellation names an id of its own connection only."""

from __future__ import annotations

import threading

import orjson
import pytest

from daemon.protocol import mcp
from tests.gateway_helpers import TOKENS
from tests.security.conftest import DAVE
from tests.security.raw import RawAgent, call, request

ROUNDS = 60


@pytest.mark.parametrize("transports", [("tcp", "tcp"), ("zmq", "zmq"), ("tcp", "zmq")])
def test_agents_using_the_same_ids_at_once_each_get_their_own_answers(gateway, transports):
    agents = {"bob": TOKENS["bob"], "dave": DAVE, "alice": TOKENS["alice"]}
    conns = {name: RawAgent(gateway, transports[i % 2]) for i, name in enumerate(agents)}
    wrong: list[str] = []
    try:
        for name, conn in conns.items():
            conn.initialize(agents[name])
        start = threading.Barrier(len(conns))

        def run(name: str, conn: RawAgent) -> None:
            start.wait()
            for rid in range(1, ROUNDS + 1):  # everyone pipelines the same ids at once
                conn.send(call(rid, "echo", {"who": name, "rid": rid}))
            for rid in range(1, ROUNDS + 1):  # and "7" next to 7: ids differ by type too
                conn.send(call(str(rid), "echo", {"who": name, "rid": str(rid)}))
            for _ in range(2 * ROUNDS):
                answer = conn.recv()
                echoed = orjson.loads(answer["result"]["content"][0]["text"])
                if echoed != {"who": name, "rid": answer["id"]}:
                    wrong.append(f"{name} got {echoed} for id {answer['id']!r}")
        threads = [threading.Thread(target=run, args=item) for item in conns.items()]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    finally:
        for conn in conns.values():
            conn.close()
    assert wrong == []


@pytest.mark.parametrize("transport", ["tcp", "zmq"])
def test_reusing_an_id_still_in_flight_answers_minus_32600_and_the_first_call_finishes(
        gateway, transport):
    with RawAgent(gateway, transport) as bob, RawAgent(gateway, transport) as other:
        bob.initialize(TOKENS["bob"])
        other.initialize(TOKENS["bob"])  # the same agent, on another connection
        bob.send(call(5, "sleep", {"seconds": 1}))
        assert other.ask(call(5, "echo", {"n": 1}))["result"]["isError"] is False
        again = bob.ask(call(5, "echo", {"n": 2}))
        assert again["id"] == 5 and again["error"]["code"] == -32600
        assert "already in flight" in again["error"]["message"]
        first = bob.recv()
        assert first["id"] == 5 and first["result"]["content"][0]["text"] == "slept 1s"
        assert bob.ask(call(5, "echo", {"n": 3}))["result"]["isError"] is False  # free again


def test_a_cancellation_cannot_reach_another_connections_call(gateway):
    with RawAgent(gateway) as bob, RawAgent(gateway, "zmq") as dave:
        bob.initialize(TOKENS["bob"])
        dave.initialize(DAVE)
        bob.send(call(9, "sleep", {"seconds": 0.5}))
        dave.send(orjson.dumps({"jsonrpc": "2.0", "method": "notifications/cancelled",
                                "params": {"requestId": 9, "reason": "not yours"}}))
        assert dave.ask(request(10, "ping", {"_meta": {}}))["id"] == 10
        assert bob.recv() == {"jsonrpc": "2.0", "id": 9, "result": {
            "content": [{"type": "text", "text": "slept 0.5s"}], "isError": False}}


def test_a_stateless_request_with_another_agents_id_gets_its_own_answer(gateway):
    with RawAgent(gateway) as alice, RawAgent(gateway) as bob:
        bob.send(request(1, "tools/call", {"name": "sleep", "arguments": {"seconds": 0.3},
                                            "_meta": {mcp.META_TOKEN: TOKENS["bob"]}}))
        answer = alice.ask(request(1, "tools/call", {"name": "echo", "arguments": {"a": 1},
                                                      "_meta": {mcp.META_TOKEN: TOKENS["alice"]}}))
        assert answer["result"]["content"][0]["text"] == '{"a":1}'
        assert bob.recv()["result"]["content"][0]["text"] == "slept 0.3s"
