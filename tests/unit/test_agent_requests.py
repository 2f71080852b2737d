"""The master's side of an upstream's request to an agent (front.agent_requests): who is
asked, whose response counts, and what a call's end forgets."""

from __future__ import annotations

import orjson

from daemon.front.agent_requests import AgentRequests
from daemon.front.switchboard import Connection
from daemon.ipc import messages

SAMPLING = b'{"method":"sampling/createMessage","params":{"maxTokens":5}}'


def desk() -> tuple[AgentRequests, list[tuple[bytes, bytes]]]:
    sent: list[tuple[bytes, bytes]] = []
    return AgentRequests(lambda identity, envelope: sent.append((identity, envelope))), sent


def agent_conn(capabilities: dict | None) -> tuple[Connection, list[bytes]]:
    heard: list[bytes] = []
    conn = Connection(heard.append, lambda: None, "tcp")
    conn.capabilities = capabilities
    return conn, heard


def test_an_agent_that_declared_sampling_is_asked_under_an_id_of_the_gateway():
    requests, sent = desk()
    conn, heard = agent_conn({"sampling": {}})
    requests.put(conn, b"gw#1", messages.pack_ask(messages.ASK, 11, 3, SAMPLING))
    asked = orjson.loads(heard[0])
    assert asked["method"] == "sampling/createMessage" and asked["params"] == {"maxTokens": 5}
    assert not sent
    requests.answered(conn, {"jsonrpc": "2.0", "id": asked["id"], "result": {"ok": 1}})
    identity, envelope = sent[0]
    assert identity == b"gw#1"
    assert messages.unpack_ask(envelope) == (11, 3, b'{"result":{"ok":1}}')
    assert not requests.pending


def test_an_agent_without_the_capability_is_not_asked_and_the_worker_hears_minus_32601():
    requests, sent = desk()
    for capabilities in ({}, None):  # declared nothing; a connection that takes no requests
        conn, heard = agent_conn(capabilities)
        requests.put(conn, b"gw#1", messages.pack_ask(messages.ASK, 11, 3, SAMPLING))
        assert not heard
        answer = orjson.loads(messages.unpack_ask(sent.pop()[1])[2])
        assert answer["error"]["code"] == -32601


def test_a_response_from_another_connection_or_after_the_call_is_ignored():
    requests, sent = desk()
    conn, heard = agent_conn({"sampling": {}})
    other, _ = agent_conn({"sampling": {}})
    requests.put(conn, b"gw#1", messages.pack_ask(messages.ASK, 11, 3, SAMPLING))
    rid = orjson.loads(heard[0])["id"]
    requests.answered(other, {"jsonrpc": "2.0", "id": rid, "result": {}})
    assert not sent and rid in requests.pending
    requests.call_over(11)
    requests.answered(conn, {"jsonrpc": "2.0", "id": rid, "result": {}})
    assert not sent and not requests.pending
