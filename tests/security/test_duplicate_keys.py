"""A message with a key given twice in any object is refused at the master (-32600):
which duplicate counts differs between JSON parsers (orjson keeps the last, others the
first), so the gateway and an upstream could otherwise read two different calls."""

from __future__ import annotations

import json

import orjson
import pytest

from daemon.protocol.duplicate_keys import duplicate_key
from tests.gateway_helpers import TOKENS
from tests.security.conftest import DAVE, received
from tests.security.raw import RawAgent


def meta(*tokens: str) -> str:
    return '"_meta":{' + ",".join(f'"io.workingagents/token":"{t}"' for t in tokens) + "}"


def tools_call(rid: int, params: str) -> bytes:
    return f'{{"jsonrpc":"2.0","id":{rid},"method":"tools/call","params":{{{params}}}}}'.encode()


def refused(answer: dict, rid: int | None) -> bool:
    error = answer.get("error", {})
    return (answer.get("id") == rid and error.get("code") == -32600
            and "appears twice in one object" in error.get("message", ""))


AMBIGUOUS = {
    # what dave may call, then what he may not: a last-wins reader runs the second
    "top-level name": '"name":"echo","name":"notes__secret_tool","arguments":{},' + meta(DAVE),
    "name, reversed": '"name":"notes__secret_tool","name":"echo","arguments":{},' + meta(DAVE),
    "a key spelled with an escape": '"name":"echo","na\\u006de":"notes__add",' + meta(DAVE),
    "inside arguments": '"name":"notes__read_note","arguments":{"name":"hello",'
                        '"name":"../../etc/passwd"},' + meta(DAVE),
    "deep in arguments": '"name":"notes__read_note","arguments":{"name":"hello","opts":[{"a":1,'
                         '"a":"\\u003a"}]},' + meta(DAVE),
    "two tokens": '"name":"notes__add","arguments":{},' + meta(TOKENS["bob"], DAVE),
    "two params objects' worth": '"name":"echo",' + meta(DAVE) + ',"_meta":{}',
}


@pytest.mark.parametrize("transport", ["tcp", "zmq"])
def test_a_call_with_a_duplicate_key_anywhere_is_refused_and_reaches_no_upstream(gateway,
                                                                                transport):
    before = {u: len(received(gateway.state_dir, u)) for u in ("notes", "vault")}
    with RawAgent(gateway, transport) as agent:
        wrong = {}
        for i, (case, params) in enumerate(AMBIGUOUS.items(), 1):
            answer = agent.ask(tools_call(i, params))
            if not refused(answer, i):
                wrong[case] = answer
        assert wrong == {}
        # the same connection goes on, and the unambiguous call works
        ok = agent.ask(tools_call(99, '"name":"notes__read_note","arguments":{"name":"hello"},'
                                  + meta(DAVE)))
        assert ok["result"]["isError"] is False
    after = {u: received(gateway.state_dir, u)[before[u]:] for u in ("notes", "vault")}
    assert len(after["notes"]) == 1 and after["vault"] == []


def test_a_duplicate_id_answers_with_a_null_id_and_a_notification_gets_no_answer(gateway):
    with RawAgent(gateway) as agent:
        answer = agent.ask(b'{"jsonrpc":"2.0","id":1,"id":2,"method":"ping"}')
        assert refused(answer, None)
        agent.send(b'{"jsonrpc":"2.0","method":"notifications/cancelled","params":'
                   b'{"requestId":1,"requestId":2}}')
        assert agent.ask(b'{"jsonrpc":"2.0","id":3,"method":"ping"}') == {
            "jsonrpc": "2.0", "id": 3, "result": {}}


def test_messages_without_duplicates_pass_whatever_colons_and_escapes_they_carry(gateway):
    arguments = {"url": "https://example.com:8443/a:b", "time": "12:30:00",
                 "escaped": "\\u003a", "colon": ":", "nested": [{"k": "v"}, {"k": "w"}]}
    message = {"jsonrpc": "2.0", "id": 5, "method": "tools/call", "params": {
        "name": "echo", "arguments": arguments, "_meta": {"io.workingagents/token": DAVE}}}
    raw = orjson.dumps(message)
    spelled = raw.replace(b'"colon":":"', b'"colon":"\\u003a"')  # the same text, escaped
    spaced = json.dumps(message, separators=(" , ", " : ")).encode()
    assert spelled != raw
    with RawAgent(gateway) as agent:
        for message in (raw, spelled, spaced):
            answer = agent.ask(message)
            assert json.loads(answer["result"]["content"][0]["text"]) == arguments


def test_what_an_upstream_receives_has_no_duplicate_keys(gateway):
    def no_duplicates(pairs: list) -> dict:
        assert len({k for k, _ in pairs}) == len(pairs), pairs
        return dict(pairs)
    lines = received(gateway.state_dir, "notes")
    assert lines, "the other tests made calls"
    for line in lines:
        json.loads(line, object_pairs_hook=no_duplicates)


@pytest.mark.parametrize("text", [
    '{"a":1,"a":2}', '{"a":{"b":1,"b":1}}', '[{"a":1},{"a":1,"a":1}]', '{"a":1,"a":"\\u003a"}',
    '{"a":1,"a":"\\u003A:"}', '{"\\u0061":1,"a":2}', '{"a" : 1 , "a" : 1}',
    '{"x":"\\\\u003a","x":1}'])
def test_the_duplicate_check_finds_every_duplicate(text):
    assert duplicate_key(text.encode(), orjson.loads(text)) is not None


@pytest.mark.parametrize("text", [
    '{"a":"b:c","d":"\\u003a"}', '{"a":"\\\\u003a"}', '{"a":[{"b":1},{"b":2}]}', '{}',
    '{"a" : {"b" : ":"}}'])
def test_the_duplicate_check_passes_objects_without_duplicates(text):
    assert duplicate_key(text.encode(), orjson.loads(text)) is None
