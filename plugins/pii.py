"""pii: redacts e-mail addresses, phone numbers and card numbers in tool results.

    [plugins.config.pii]
    kinds = ["email", "phone", "card"]   # which to redact (default: all three)

Card numbers are redacted only when their Luhn checksum holds, so order ids and other
long numbers pass.  Patterns are precompiled once per version.
"""

from __future__ import annotations

import re
from typing import Any, Literal

import msgspec

from daemon.plugin import Plugin, PluginConfig

EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
# Whole numbers only: a match may not continue into a neighbouring digit group, so that
# an order id next to a phone number is never cut into a fake card or phone.
_ALONE_BEFORE = r"(?<![\w+])(?<!\d[ .-])"
_ALONE_AFTER = r"(?![ .-]?\d)"
# grouped with separators (415-555-2671, (415) 555 2671, +44 20 7946 0958), or E.164
PHONE = re.compile(_ALONE_BEFORE + r"(?:(?:\+\d{1,3}[ .-]?)?(?:\(\d{2,4}\)|\d{2,4})[ .-]\d{3,4}"
                   r"[ .-]\d{3,4}|\+\d{8,15})" + _ALONE_AFTER)
# card-shaped: 4-4-4-4 (and 4-4-4-1..7), Amex 4-6-5, or 13-19 digits in a row
CARD = re.compile(_ALONE_BEFORE + r"((?:\d{4}[ -]){3}\d{1,7}|\d{4}[ -]\d{6}[ -]\d{5}|\d{13,19})"
                  + _ALONE_AFTER)


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        n = int(ch)
        if i % 2:
            n = n * 2 - 9 if n > 4 else n * 2
        total += n
    return total % 10 == 0


def redact(text: str, kinds: set[str]) -> tuple[str, int]:
    found = 0

    if "card" in kinds:
        def card(m: re.Match[str]) -> str:
            nonlocal found
            digits = re.sub(r"\D", "", m.group(1))
            if 13 <= len(digits) <= 19 and luhn_ok(digits):
                found += 1
                return "[card]"
            return m.group()
        text = CARD.sub(card, text)
    if "email" in kinds:
        text, n = EMAIL.subn("[email]", text)
        found += n
    if "phone" in kinds:
        text, n = PHONE.subn("[phone]", text)
        found += n
    return text, found


class PiiConfig(PluginConfig):
    kinds: list[Literal["email", "phone", "card"]] = msgspec.field(
        default_factory=lambda: ["email", "phone", "card"])


class Pii(Plugin):
    name = "pii"
    version = 1
    priority = 60
    config_schema = PiiConfig
    config: PiiConfig

    async def after_call(self, call: Any, result: dict[str, Any]) -> dict[str, Any] | None:
        kinds = set(self.config.kinds)
        changed, content = 0, []
        for block in result.get("content") or []:
            if block.get("type") == "text":
                text, n = redact(block["text"], kinds)
                changed += n
                block = {**block, "text": text}
            content.append(block)
        return {**result, "content": content} if changed else None

    def self_test(self) -> None:
        text, n = redact("mail a@b.io, card 4111 1111 1111 1111, order 1234567890123, "
                         "call +1 415 555 2671", {"email", "card", "phone"})
        assert n == 3 and "1234567890123" in text and "[phone]" in text, text
