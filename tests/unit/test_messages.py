"""The worker bus's one encoding: every frame is a kind byte then a body, and the control
messages are typed Structs in MESSAGE envelopes (ipc.messages)."""

from __future__ import annotations

import pytest

from daemon.ipc import messages

EVERY_KIND: list[messages.Message] = [
    messages.Ready(pid=42),
    messages.Heartbeat(),
    messages.Config(gateway={"max_concurrent": 3}),
    messages.AuditStatus(file="a.jsonl", records=7, fsync="batch", failing=None,
                         checkpointed=5, pending=0),
    messages.UpstreamTools(upstream="u", endpoint="ipc:///x", tools=[{"name": "echo"}]),
    messages.Upstreams(upstreams={"u": {"state": "up", "tools": []}}),
    messages.PluginPrepare(token=1, name="p", spec={"source": "..."}),
    messages.PluginCommit(token=2, name="p"),
    messages.PluginAbort(token=3, name="p"),
    messages.PluginUnload(token=4, name="p"),
    messages.PluginSnapshot(token=5),
    messages.PluginReply(token=6, ok=False, error="ValueError: no"),
    messages.PluginState(plugins={"p": {"version": "1", "state": {"n": 1}}}),
]


@pytest.mark.parametrize("message", EVERY_KIND, ids=lambda m: type(m).__name__)
def test_every_kind_travels_as_a_message_envelope_and_comes_back_typed(message):
    frame = messages.pack_message(message)
    assert frame[:1] == messages.MESSAGE
    assert messages.unpack_message(frame) == message


def test_the_heartbeat_frame_is_encoded_once_and_reads_as_a_heartbeat():
    assert messages.unpack_message(messages.HEARTBEAT_FRAME) == messages.Heartbeat()
    assert messages.pack_message(messages.Heartbeat()) == messages.HEARTBEAT_FRAME


@pytest.mark.parametrize("frame", [b"m", b"m[]", b'm{"k":"nope"}', b'm{"k":"ready"}',
                                   b'm{"k":"ready","pid":"x"}', b"m{not json"])
def test_a_malformed_message_is_refused(frame):
    with pytest.raises(messages.MalformedMessage):
        messages.unpack_message(frame)


def test_a_batch_carries_messages_and_data_envelopes_alike():
    ready = messages.pack_message(messages.Ready(pid=1))
    reply = messages.pack_reply(9, b"{}")
    assert messages.envelopes(messages.pack_batch([ready, reply])) == [ready, reply]


def test_an_ask_and_its_answer_carry_the_call_the_number_and_the_body_untouched():
    body = b'{"method":"sampling/createMessage","params":{"maxTokens":5}}'
    for kind in (messages.ASK, messages.ANSWER):
        frame = messages.pack_ask(kind, 2**40 + 3, 7, body)
        assert frame[:1] == kind
        assert messages.unpack_ask(frame) == (2**40 + 3, 7, body)
        assert messages.unpack_seq(frame)[0] == 2**40 + 3  # routed by its call, like any
