"""What daemon.llm.texts walks of a request or an answer, in either API's shape."""

from __future__ import annotations

from daemon.llm.apis import parse_event
from daemon.llm.texts import map_texts, texts

OPENAI = {"model": "m", "messages": [
    {"role": "system", "content": "sys"},
    {"role": "user", "content": [{"type": "text", "text": "part"}, {"type": "image_url"}]},
    {"role": "assistant", "content": None},
    {"role": "tool", "content": "tool out"}]}
ANTHROPIC = {"model": "m", "system": [{"type": "text", "text": "sys"}], "messages": [
    {"role": "user", "content": [{"type": "tool_result", "content": "result"},
                                 {"type": "text", "text": "ask"}]}]}
ANSWERS = [{"choices": [{"message": {"content": "one"}}, {"text": "legacy"}]},
           {"type": "message", "content": [{"type": "text", "text": "two"}]}]


def test_every_text_of_both_apis_is_visited_in_order() -> None:
    assert texts(OPENAI) == ["sys", "part", "tool out"]
    assert texts(ANTHROPIC) == ["result", "ask", "sys"]
    assert [texts(a) for a in ANSWERS] == [["one", "legacy"], ["two"]]
    assert texts({"input": ["a", 1, "b"]}) == ["a", "b"]


def test_only_tool_outputs_are_visited_when_asked() -> None:
    assert texts(OPENAI, tool_outputs_only=True) == ["tool out"]
    assert texts(ANTHROPIC, tool_outputs_only=True) == ["result"]


def test_a_body_nothing_rewrote_is_the_same_object() -> None:
    for body in (OPENAI, ANTHROPIC, *ANSWERS):
        assert map_texts(body, lambda text: text) is body


def test_a_rewrite_copies_only_what_changed() -> None:
    out = map_texts(OPENAI, lambda text: text.upper() if text == "part" else text)
    assert out is not OPENAI and out["messages"][1]["content"][0]["text"] == "PART"
    assert out["messages"][0] is OPENAI["messages"][0]
    assert OPENAI["messages"][1]["content"][0]["text"] == "part"  # the original is kept


def test_an_sse_event_of_one_data_line_and_of_several_lines_parse_alike() -> None:
    assert parse_event(b"data: {}\n\n") == (None, b"{}")
    assert parse_event(b"data:{}\n\n") == (None, b"{}")
    assert parse_event(b"event: ping\ndata: {}\n\n") == ("ping", b"{}")
    assert parse_event(b"data: a\ndata: b\n\n") == (None, b"a\nb")
