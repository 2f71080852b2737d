"""A provider's key kept from the agent: whatever a provider (or a proxy before it)
quotes back of the credentials it was sent is replaced by ``[provider key]`` before
the agent or the audit log sees it.

Three places a key can hide in an answer, and what catches each:

- its bytes as they are (an error body, an id, any field): ``data`` (one substring
  check per body or per read of a stream);
- JSON-escaped (``"\\u0073k-..."``), which the SDK decodes back into the key: ``json``
  looks again at the parsed value, but only when the bytes hold a backslash;
- split across a stream's text deltas ("...sk-pro" + "j-abc..."), which no single event
  holds: ``text`` runs on each slot's text with a carry-over, keeping back at most
  len(key) - 1 characters, and only while they could still begin the key (so text that
  cannot be a key's start is never delayed).
"""

from __future__ import annotations

from typing import Any

import orjson

MARK = "[provider key]"
_MARK = MARK.encode()


class KeyScrub:
    __slots__ = ("key", "raw")

    def __init__(self, key: str) -> None:
        self.key = key
        self.raw = key.encode()

    def data(self, data: bytes) -> bytes:
        return data.replace(self.raw, _MARK) if self.raw in data else data

    def json(self, body: bytes, value: Any) -> tuple[bytes, Any]:
        """A JSON body (already scrubbed by ``data``) and its parsed ``value``: both
        without the key even where the body escaped it.  The same objects if clean."""
        if b"\\" not in body:  # no escape: data() saw every string as the SDK will
            return body, value
        canonical = orjson.dumps(value)  # strings unescaped (but for " \\ and controls)
        if self.raw not in canonical:
            return body, value
        body = canonical.replace(self.raw, _MARK)
        return body, orjson.loads(body)

    def text(self, text: str, final: bool) -> tuple[str, str]:
        """(what of a slot's text may go out now, the end kept back because it may be
        the start of the key).  The caller puts the kept end before the slot's next
        text; at the slot's end (``final``) nothing is kept."""
        key = self.key
        if key in text:
            text = text.replace(key, MARK)
        if final:
            return text, ""
        first = key[0]
        start = text.find(first, max(0, len(text) - len(key) + 1))
        while start >= 0:
            if key.startswith(text[start:]):
                return text[:start], text[start:]
            start = text.find(first, start + 1)
        return text, ""


def of(key: str | None) -> KeyScrub | None:
    return KeyScrub(key) if key else None
