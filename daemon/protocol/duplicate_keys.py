"""Refusing JSON objects with a key given twice, for nearly nothing per message.

orjson keeps the last of duplicate keys; other parsers (an upstream's, a plugin's, a
log reader's) may keep the first.  A message whose meaning depends on which one wins
(``{"name": "echo", "name": "secret_tool"}``) is refused before anyone acts on it.

The cheap proof that there is no duplicate: re-encode the parsed message and count
colons.  Every colon of the decoded document (one after each key, plus any inside
strings) is in the raw bytes either as ``:`` or as the escape ``\\u003a``/``\\u003A``,
and without duplicates the re-encoding holds every key and string again, so the counts
match.  A duplicate drops at least its key's colon from the re-encoding, so the raw
count is higher.  Only then (or for raw text that spells ``\\\\u003a``, which counts
too high) does the exact, slower parse run.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

_COLON, _BACKSLASH, _ESCAPED_LOWER, _ESCAPED_UPPER = b":", b"\\", b"\\u003a", b"\\u003A"


def duplicate_key(raw: bytes, parsed: Any) -> str | None:
    """The first key that some object of ``raw`` holds twice, or None; ``parsed`` is
    orjson's reading of ``raw``."""
    colons = raw.count(_COLON)
    if _BACKSLASH in raw:  # one memchr; the escapes' longer patterns search slower
        colons += raw.count(_ESCAPED_LOWER) + raw.count(_ESCAPED_UPPER)
    if colons == orjson.dumps(parsed).count(_COLON):
        return None
    return _first_duplicate(raw)


def duplicate_message(key: str) -> str:
    """The -32600 message that names the key."""
    return f"Invalid Request: key {key[:64]!r} appears twice in one object"


class _Duplicate(Exception):
    def __init__(self, key: str) -> None:
        self.key = key


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _value in pairs:
            if key in seen:
                raise _Duplicate(key)
            seen.add(key)
    return obj


def _first_duplicate(raw: bytes) -> str | None:
    try:
        json.loads(raw, object_pairs_hook=_pairs)
    except _Duplicate as found:
        return found.key
    return None
