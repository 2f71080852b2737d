"""result_cap: caps the size of a tool's result.

    [plugins.config.result_cap]
    max_bytes = 1048576   # of text in the result's content (default 1 MiB)

Text beyond the cap is cut and a note says so; content blocks past the cap are dropped.
"""

from __future__ import annotations

from typing import Annotated, Any

from msgspec import Meta

from daemon.plugin import Plugin, PluginConfig


class ResultCapConfig(PluginConfig):
    max_bytes: Annotated[int, Meta(ge=1)] = 1 << 20


class ResultCap(Plugin):
    name = "result_cap"
    version = 1
    priority = 90
    config_schema = ResultCapConfig
    config: ResultCapConfig

    def after_call(self, call: Any, result: dict[str, Any]) -> dict[str, Any] | None:
        cap = self.config.max_bytes
        content = result.get("content") or []
        bound = 0  # UTF-8 takes at most 4 bytes a character: most results are far below
        for block in content:
            text = block.get("text", "") if block.get("type") == "text" else None
            bound += 4 * len(text) if isinstance(text, str) else cap + 1
        if bound <= cap:
            return None
        sizes = [len(str(block.get("text", "")).encode()) if block.get("type") == "text"
                 else len(str(block)) for block in content]
        total = sum(sizes)
        if total <= cap:
            return None
        kept, used = [], 0
        for block, size in zip(content, sizes, strict=True):
            if used + size <= cap:
                kept.append(block)
                used += size
            elif block.get("type") == "text" and used < cap:
                text = block["text"].encode()[:cap - used].decode(errors="ignore")
                kept.append({**block, "text": text})
                used = cap
            else:
                break
        note = f"[result_cap: result cut to {cap} of {total} bytes]"
        kept.append({"type": "text", "text": note})
        return {**result, "content": kept,
                "_meta": {**(result.get("_meta") or {}),
                          "io.workingagents/truncated": {"by": self.name, "bytes": total,
                                                         "cap": cap}}}
