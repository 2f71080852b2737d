"""An upstream's event stream split into JSON-RPC messages."""

from __future__ import annotations

from daemon.tools.sse_events import SseEvents


def test_a_priming_event_with_empty_data_is_no_message():
    # what the TypeScript SDK's servers send first on a resumable stream
    events = SseEvents(1 << 20)
    assert events.feed(b"id: 1_0\ndata: \n\n") == []
    assert events.feed(b"id: 1_1\nevent: message\ndata: {\"id\":1}\n\n") == [b'{"id":1}']


def test_data_lines_join_and_comments_and_crlf_are_read_past():
    events = SseEvents(1 << 20)
    assert events.feed(b": keep-alive\r\n\r\ndata: {\"a\":\r\ndata: 1}\r") == []
    assert events.feed(b"\n\r\n") == [b'{"a":\n1}']
