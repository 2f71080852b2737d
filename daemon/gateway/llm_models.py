"""``GET /v1/models`` and ``GET /v1/models/{id}`` in a gateway worker: the models an
agent's roles allow, of those the providers serve (their own lists where they give one,
reused for MODELS_TTL, and the literal names in their ``models``), in a shape both SDKs
read (OpenAI's ``object``/``owned_by``, Anthropic's ``type``/``display_name``)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from daemon.llm.providers import Providers

MODELS_TTL = 60.0  # seconds a provider's model list is reused


class ModelList:
    def __init__(self) -> None:
        self.cache: dict[str, tuple[float, list[str]]] = {}  # provider -> (when, ids)

    async def listed(self, providers: Providers, may_use: Callable[[str, str], bool],
                     agent: str) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        found: dict[str, str] = {}
        for provider in providers.all:
            cached = self.cache.get(provider.name)
            if cached is None or loop.time() - cached[0] > MODELS_TTL:
                listed = await providers.get(provider, "/models")
                data = listed.get("data") if isinstance(listed, dict) else None
                ids = [m["id"] for m in (data if isinstance(data, list) else ())
                       if isinstance(m, dict) and isinstance(m.get("id"), str)]
                cached = self.cache[provider.name] = (loop.time(), ids)
            literal = [p for p in provider.models if not any(c in p for c in "*?[")]
            for model in [*cached[1], *literal]:
                if provider.serves(model) and may_use(agent, model):
                    found.setdefault(model, provider.name)
        data = [{"id": m, "object": "model", "created": 0, "owned_by": p, "type": "model",
                 "display_name": m, "created_at": "1970-01-01T00:00:00Z"}
                for m, p in sorted(found.items())]
        return {"object": "list", "data": data, "has_more": False,
                "first_id": data[0]["id"] if data else None,
                "last_id": data[-1]["id"] if data else None}

    @staticmethod
    def one(listed: dict[str, Any], wanted: str) -> dict[str, Any] | None:
        return next((m for m in listed["data"] if m["id"] == wanted), None)
