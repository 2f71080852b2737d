"""pii: redacts e-mail addresses, phone numbers and card numbers in tool results.

    [plugins.config.pii]
    kinds = ["email", "phone", "card"]   # which to redact (default: all three)

LLM requests (AI gateway): prompts are redacted before they leave, answers before the
agent sees them, streamed ones too (on_chunk, with a carry-over window of 64 characters).
A2A messages (agent gateway): the text of every part, both ways, streamed events too.

Card numbers are redacted only when their Luhn checksum holds, so order ids and other
long numbers pass.  Patterns are precompiled once per version and run on RE2 (linear
time, and ~10x faster than `re` here: a 1 MiB result takes a few milliseconds).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, ClassVar, Literal

import msgspec
import re2

from daemon.a2a.binding import map_parts
from daemon.llm.texts import map_texts as map_llm_texts
from daemon.llm.texts import settled
from daemon.plugin import Plugin, PluginConfig, map_texts, texts

_OPTIONS = re2.Options()
_OPTIONS.log_errors = False
_OPTIONS.encoding = re2.Options.Encoding.LATIN1  # patterns on the text's UTF-8 bytes
# Whole numbers only, so that an order id next to a phone number is never cut into a fake
# card or phone: a number may not continue a word or a neighbouring digit group.  RE2 has
# no lookarounds, so the neighbours are matched (group 1 is the number itself) and the
# scan resumes right after the number; the text is padded with two spaces each side.
_BEFORE = rb"(?:[^0-9A-Za-z_+ .\-\x80-\xff]|[^0-9][ .\-])"
_AFTER = rb"(?:[^0-9 .\-]|[ .\-][^0-9])"
# card-shaped: 4-4-4-4 (and 4-4-4-1..7), Amex 4-6-5, or 13-19 digits in a row
CARD = re2.compile(_BEFORE + rb"((?:\d{4}[ -]){3}\d{1,7}|\d{4}[ -]\d{6}[ -]\d{5}|\d{13,19})"
                   + _AFTER, _OPTIONS)
# grouped with separators (415-555-2671, (415) 555 2671, +44 20 7946 0958), or E.164
PHONE = re2.compile(_BEFORE + rb"((?:\+\d{1,3}[ .\-]?)?(?:\(\d{2,4}\)|\d{2,4})[ .\-]\d{3,4}"
                    rb"[ .\-]\d{3,4}|\+\d{8,15})" + _AFTER, _OPTIONS)
EMAIL = re2.compile(rb"([A-Za-z0-9._%+\-]+@[A-Za-z0-9.\-]+\.[A-Za-z]{2,})", _OPTIONS)
# a letter-run per match costs RE2's Python wrapper ~5 us; plain re is cheaper per match
EMAIL_DENSE = re.compile(rb"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
# a digit byte -> the digit byte of its Luhn double (2d, minus 9 above 9)
_DOUBLE_TABLE = bytes.maketrans(b"0123456789", b"0246813579")


def luhn_ok(digits: bytes) -> bool:
    """digits: ASCII digits only."""
    odd = digits[-2::-2].translate(_DOUBLE_TABLE)  # every second digit from the right
    return (sum(digits[::-2]) + sum(odd) - 48 * len(digits)) % 10 == 0


def _is_card(number: bytes) -> bool:
    digits = number.translate(None, b" -")
    return 13 <= len(digits) <= 19 and luhn_ok(digits)


def _replace(pattern: Any, data: bytes, label: bytes,
             keep: Callable[[bytes], bool] | None = None) -> tuple[bytes, int]:
    """Each group-1 match that ``keep`` accepts, replaced by ``label``."""
    pieces, at, found = [], 0, 0
    search = pattern.search
    m = search(data, 0)
    while m is not None:
        start, end = m.span(1)
        if keep is None or keep(data[start:end]):
            pieces += (data[at:start], label)
            at = end
            found += 1
        m = search(data, end)
    if not found:
        return data, 0
    pieces.append(data[at:])
    return b"".join(pieces), found


_DIGITS = b"0123456789"
# the fewest digits a match holds: a phone number 8 (2+3+3, or + and 8), a card 13
_PHONE_DIGITS, _CARD_DIGITS = 8, 13


def redact(text: str, kinds: set[str]) -> tuple[str, int]:
    data = text.encode()
    # one count of the digits (and of "@") rules out every pattern in most texts
    digits = len(data) - len(data.translate(None, _DIGITS))
    if digits < _PHONE_DIGITS and (b"@" not in data or "email" not in kinds):
        return text, 0
    data = b"  " + data + b"  "
    found = 0
    if "card" in kinds and digits >= _CARD_DIGITS:
        data, n = _replace(CARD, data, b"[card]", _is_card)
        found += n
    if "email" in kinds:
        ats = data.count(b"@")
        if ats > 1000:
            data, n = EMAIL_DENSE.subn(b"[email]", data)
        elif ats:
            data, n = _replace(EMAIL, data, b"[email]")
        else:
            n = 0
        found += n
    if "phone" in kinds and digits >= _PHONE_DIGITS:
        data, n = _replace(PHONE, data, b"[phone]")
        found += n
    return (data[2:-2].decode() if found else text), found


class PiiConfig(PluginConfig):
    kinds: list[Literal["email", "phone", "card"]] = msgspec.field(
        default_factory=lambda: ["email", "phone", "card"])


class Pii(Plugin):
    name = "pii"
    version = 1
    priority = 60
    config_schema = PiiConfig
    config: PiiConfig
    # which calls it sees (not config.kinds: the kinds of PII it looks for)
    kinds: ClassVar[frozenset[str]] = frozenset({"tool", "resource", "prompt", "llm", "a2a"})
    # the arguments of a tool, resource or prompt are the agent's own business
    hook_kinds: ClassVar[dict[str, frozenset[str]]] = {"before_call": frozenset({"llm", "a2a"})}
    stream_window = 64

    def __init__(self, config: Any = None, log: Any = None) -> None:
        super().__init__(config, log)
        self.pii_kinds = set(self.config.kinds)  # what it looks for

    def redact_text(self, text: str) -> str:
        """The text with its PII masked; the same object when it has none."""
        redacted, found = redact(text, self.pii_kinds)
        return redacted if found else text

    def before_call(self, call: Any) -> Any:
        if call.kind not in ("llm", "a2a"):
            return None  # (hook_kinds: not asked) tool arguments are the agent's own business
        redacted = (map_llm_texts if call.kind == "llm" else map_parts)(call.arguments,
                                                                        self.redact_text)
        return None if redacted is call.arguments else call.with_arguments(redacted)

    async def on_chunk(self, call: Any, text: str, final: bool) -> str | None:
        judged, open_end = settled(text, final)
        redacted = self.redact_text(judged)
        return None if redacted is judged else redacted + open_end

    def after_call(self, call: Any, result: dict[str, Any]) -> dict[str, Any] | None:
        if call.kind in ("llm", "a2a"):
            redacted = (map_llm_texts if call.kind == "llm" else map_parts)(result,
                                                                            self.redact_text)
            return None if redacted is result else redacted
        kinds = self.pii_kinds
        found: dict[str, str] = {}  # each text with PII, redacted
        for text in texts(result):
            redacted, n = redact(text, kinds)
            if n:
                found[text] = redacted
        if not found:
            return None  # most results: read once, never copied
        return map_texts(result, lambda text: found.get(text, text))

    def self_test(self) -> None:
        text, n = redact("mail a@b.io, card 4111 1111 1111 1111, order 1234567890123, "
                         "call +1 415 555 2671", {"email", "card", "phone"})
        assert n == 3 and "1234567890123" in text and "[phone]" in text, text
