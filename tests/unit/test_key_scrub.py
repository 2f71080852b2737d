"""daemon.llm.key_scrub: a provider key kept out of answers, whole, escaped or split."""

from __future__ import annotations

import orjson

from daemon.llm.key_scrub import MARK, KeyScrub

KEY = "sk-aab-123"


def stream(scrub: KeyScrub, pieces: list[str]) -> str:
    """What goes out of a slot's text fed in ``pieces`` (the last one final)."""
    out, held = [], ""
    for i, piece in enumerate(pieces):
        passed, held = scrub.text(held + piece, i == len(pieces) - 1)
        out.append(passed)
    return "".join(out)


def test_a_key_split_at_every_point_never_goes_out_and_other_text_is_unchanged():
    scrub = KeyScrub(KEY)
    said = f"see {KEY} and s, sk-, sk-aa and {KEY}{KEY}s"
    for cut in range(1, len(said)):
        for size in (1, 2, 3, 5):
            pieces = [said[:cut]] + [said[i:i + size] for i in range(cut, len(said), size)]
            assert stream(scrub, pieces) == said.replace(KEY, MARK)


def test_text_that_cannot_begin_the_key_is_never_held_back():
    assert KeyScrub(KEY).text("nothing to hold here.", False) == ("nothing to hold here.", "")
    assert KeyScrub(KEY).text("ends in sk-a", False) == ("ends in ", "sk-a")


def test_a_json_escaped_key_is_found_in_the_parsed_answer():
    body = b'{"content": "k=\\u0073k-aab-123"}'
    clean, value = KeyScrub(KEY).json(body, orjson.loads(body))
    assert value == {"content": f"k={MARK}"} and KEY.encode() not in clean
    plain = b'{"content": "no key"}'
    parsed = orjson.loads(plain)
    assert KeyScrub(KEY).json(plain, parsed) == (plain, parsed)
