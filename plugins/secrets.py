"""secrets: blocks or redacts API keys, private keys and tokens in arguments and results.

    [plugins.config.secrets]
    arguments = "block"      # "block" (deny the call) or "redact"
    results = "redact"       # "redact" or "block"
    entropy = false          # also flag long high-entropy strings (noisy on hashes)
    patterns = ["corp_[A-Za-z0-9]{32}"]   # extra patterns; run on RE2 (linear time)
    prompts = "redact"       # LLM requests: "redact" the prompts, or "block" the request
    messages = "redact"      # A2A messages: "redact" their parts, or "block" the message

LLM requests (AI gateway): prompts are redacted before they leave (or the request is
refused), answers before the agent sees them: whole, or as they stream (on_chunk, with a
carry-over window of 96 characters, so a key split across chunks is still caught).
A2A messages (agent gateway): the text of every part, both ways, streamed events too.

Well-known formats are precompiled once per version; a sysadmin's patterns run on
google-re2, so no pattern can backtrack catastrophically.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from typing import Any, ClassVar, Literal

import orjson
import re2

from daemon.a2a.binding import map_parts
from daemon.llm.texts import map_texts as map_llm_texts
from daemon.llm.texts import settled
from daemon.plugin import Deny, Plugin, PluginConfig, map_texts, texts

KNOWN = {
    "aws access key": r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b",
    "github token": r"\bgh[pousr]_[A-Za-z0-9]{36,255}\b",
    "slack token": r"\bxox[abprs]-[A-Za-z0-9-]{10,}\b",
    "openai key": r"\bsk-(?:proj-)?[A-Za-z0-9_-]{20,}\b",
    "private key": r"-----BEGIN [A-Z ]*PRIVATE KEY-----",
    "jwt": r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}",
    "bearer token": r"(?i)\bbearer\s+[A-Za-z0-9._~+/-]{20,}=*",
}
WORD = re.compile(r"[A-Za-z0-9+/_=-]{32,}")
# A literal that every match of KNOWN contains: most texts hold none of them, and one
# scan for a few literals is a fraction of the cost of a call into RE2.  Literals only,
# so this scan cannot backtrack either.
HINTS = r"AKIA|ASIA|gh[pousr]_|xox[abprs]-|sk-|-----BEGIN |eyJ|(?i:bearer)"
_HINTS_TEXT, _HINTS_BYTES = re.compile(HINTS), re.compile(HINTS.encode())


def matcher(extra: list[str]) -> Any:
    """One RE2 pattern for KNOWN and the sysadmin's own."""
    options = re2.Options()
    options.log_errors = False
    return re2.compile("|".join(f"(?:{p})" for p in [*KNOWN.values(), *extra]), options)


# compiled with the module, which a worker may find already run (hotswap.warm): the
# common config has no patterns of its own
KNOWN_MATCHER = matcher([])


def entropy(word: str) -> float:
    counts = Counter(word)
    return -sum(n / len(word) * math.log2(n / len(word)) for n in counts.values())


class SecretsConfig(PluginConfig):
    arguments: Literal["block", "redact"] = "block"
    results: Literal["redact", "block"] = "redact"
    entropy: bool = False
    patterns: list[str] = []  # extra patterns (RE2 syntax)
    prompts: Literal["redact", "block"] = "redact"  # LLM requests
    messages: Literal["redact", "block"] = "redact"  # A2A messages


class Secrets(Plugin):
    name = "secrets"
    version = 1
    priority = 20
    config_schema = SecretsConfig
    config: SecretsConfig
    # a resource can leak a key too, and a prompt or a message carry one out
    kinds: ClassVar[frozenset[str]] = frozenset({"tool", "resource", "prompt", "llm", "a2a"})
    stream_window = 96  # the longest key that is still caught when split across chunks

    def __init__(self, config: Any = None, log: Any = None) -> None:
        super().__init__(config, log)
        self.matcher = matcher(self.config.patterns) if self.config.patterns else KNOWN_MATCHER
        # the hints rule out KNOWN only: a sysadmin's pattern may match anything
        self.hinted = not self.config.patterns and not self.config.entropy

    def find(self, text: str) -> list[str]:
        hits = [m.group() for m in self.matcher.finditer(text)]
        if self.config.entropy:
            hits += [w for w in WORD.findall(text) if entropy(w) > 4.5]
        return hits

    def redact(self, text: str) -> str:
        for hit in sorted(set(self.find(text)), key=len, reverse=True):
            text = text.replace(hit, "[secret]")
        return text

    def carries(self, data: bytes) -> bool:
        """Whether find() would find anything in this UTF-8 text (one scan of the bytes,
        which spares the wrapper's offset bookkeeping for str: most texts hold none)."""
        if self.hinted and _HINTS_BYTES.search(data) is None:
            return False
        return self.config.entropy or self.matcher.search(data) is not None

    def may_carry(self, text: str) -> bool:
        """carries() for a str, without encoding it when the hints rule it out."""
        if self.hinted and _HINTS_TEXT.search(text) is None:
            return False
        return self.carries(text.encode())

    def redact_found(self, text: str) -> str:
        """The text with its secrets masked; the same object when it has none."""
        if not self.may_carry(text) or not self.find(text):
            return text
        return self.redact(text)

    def before_call(self, call: Any) -> Any:
        raw = orjson.dumps(call.arguments)
        if not self.carries(raw):
            return None
        if call.kind in ("llm", "a2a"):
            redacted = (map_llm_texts if call.kind == "llm" else map_parts)(
                call.arguments, self.redact_found)
            if redacted is call.arguments:
                return None
            if (self.config.prompts if call.kind == "llm" else self.config.messages) \
                    == "redact":
                return call.with_arguments(redacted)
            return Deny(f"the {'prompt' if call.kind == 'llm' else 'message'} carries a "
                        "secret (API key, private key or token)", "guardrail",
                        redacted=redacted)
        text = raw.decode()
        if not self.find(text):
            return None
        redacted = orjson.loads(self.redact(text))  # what the audit record may keep
        if self.config.arguments == "redact":
            return call.with_arguments(redacted)
        return Deny("the arguments carry a secret (API key, private key or token)",
                    "guardrail", redacted=redacted)

    def after_call(self, call: Any, result: dict[str, Any]) -> Any:
        if call.kind in ("llm", "a2a"):
            redacted = (map_llm_texts if call.kind == "llm" else map_parts)(
                result, self.redact_found)
            if redacted is result:
                return None
            if self.config.results == "block":
                return Deny("the answer carries a secret", "guardrail")
            return redacted
        for text in texts(result):  # a loop: a generator here cost more than the scan
            if self.may_carry(text) and self.find(text):
                break
        else:
            return None
        if self.config.results == "block":
            return Deny("the result carries a secret", "guardrail")
        return map_texts(result, self.redact)

    async def on_chunk(self, call: Any, text: str, final: bool) -> Any:
        judged, open_end = settled(text, final)
        redacted = self.redact_found(judged)
        if redacted is judged:
            return None
        if self.config.results == "block":
            return Deny("the answer carries a secret", "guardrail")
        return redacted + open_end

    def self_test(self) -> None:
        assert self.find("key AKIAABCDEFGHIJKLMNOP here"), "aws pattern"
        assert not self.find("nothing to see"), "no false positive on plain text"
