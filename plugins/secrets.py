"""secrets: blocks or redacts API keys, private keys and tokens in arguments and results.

    [plugins.config.secrets]
    arguments = "block"      # "block" (deny the call) or "redact"
    results = "redact"       # "redact" or "block"
    entropy = false          # also flag long high-entropy strings (noisy on hashes)
    patterns = ["corp_[A-Za-z0-9]{32}"]   # extra patterns; run on RE2 (linear time)
    prompts = "redact"       # LLM requests: "redact" the prompts, or "block" the request

LLM requests (AI gateway): prompts are redacted before they leave (or the request is
refused), answers before the agent sees them: whole, or as they stream (on_chunk, with a
carry-over window of 96 characters, so a key split across chunks is still caught).

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

from daemon.llm.texts import map_texts, settled
from daemon.plugin import Deny, Plugin, PluginConfig

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


def entropy(word: str) -> float:
    counts = Counter(word)
    return -sum(n / len(word) * math.log2(n / len(word)) for n in counts.values())


class SecretsConfig(PluginConfig):
    arguments: Literal["block", "redact"] = "block"
    results: Literal["redact", "block"] = "redact"
    entropy: bool = False
    patterns: list[str] = []  # extra patterns (RE2 syntax)
    prompts: Literal["redact", "block"] = "redact"  # LLM requests


class Secrets(Plugin):
    name = "secrets"
    version = 1
    priority = 20
    config_schema = SecretsConfig
    config: SecretsConfig
    kinds: ClassVar[frozenset[str]] = frozenset({"tool", "llm"})
    stream_window = 96  # the longest key that is still caught when split across chunks

    def __init__(self, config: Any = None, log: Any = None) -> None:
        super().__init__(config, log)
        patterns = [*KNOWN.values(), *self.config.patterns]
        options = re2.Options()
        options.log_errors = False
        self.matcher = re2.compile("|".join(f"(?:{p})" for p in patterns), options)

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
        return self.config.entropy or self.matcher.search(data) is not None

    def redact_found(self, text: str) -> str:
        """The text with its secrets masked; the same object when it has none."""
        if not self.carries(text.encode()) or not self.find(text):
            return text
        return self.redact(text)

    async def before_call(self, call: Any) -> Any:
        raw = orjson.dumps(call.arguments)
        if not self.carries(raw):
            return None
        if call.kind == "llm":
            redacted = map_texts(call.arguments, self.redact_found)
            if redacted is call.arguments:
                return None
            if self.config.prompts == "redact":
                return call.with_arguments(redacted)
            return Deny("the prompt carries a secret (API key, private key or token)",
                        "guardrail", redacted=redacted)
        text = raw.decode()
        if not self.find(text):
            return None
        redacted = orjson.loads(self.redact(text))  # what the audit record may keep
        if self.config.arguments == "redact":
            return call.with_arguments(redacted)
        return Deny("the arguments carry a secret (API key, private key or token)",
                    "guardrail", redacted=redacted)

    async def after_call(self, call: Any, result: dict[str, Any]) -> Any:
        if call.kind == "llm":
            redacted = map_texts(result, self.redact_found)
            if redacted is result:
                return None
            if self.config.results == "block":
                return Deny("the answer carries a secret", "guardrail")
            return redacted
        texts = [b.get("text", "") for b in result.get("content") or []
                 if b.get("type") == "text"]
        if not any(self.carries(t.encode()) and self.find(t) for t in texts):
            return None
        if self.config.results == "block":
            return Deny("the result carries a secret", "guardrail")
        return {**result, "content": [
            {**b, "text": self.redact(b["text"])} if b.get("type") == "text" else b
            for b in result.get("content") or []]}

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
