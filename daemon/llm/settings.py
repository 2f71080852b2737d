"""``[llm]`` and ``[llm.providers.NAME]``: the providers behind the AI gateway.

    [llm]
    request_timeout = 600.0         # a whole request, stream included
    max_response_bytes = 16777216   # a whole answer, or a stream's text, held per request
    max_concurrent_per_agent = 64   # requests one agent has in flight (0: no cap)
    [llm.providers.openai]
    kind = "openai"                 # "openai" | "anthropic": the provider's wire format
    base_url = "https://api.openai.com/v1"
    api_key_env = "OPENAI_API_KEY"  # the key's name (environment or credential), never it
    models = ["gpt-*", "o*"]        # globs of the models it serves; the first match routes
    timeout = 60.0                  # per attempt: to the response head, and between chunks
    max_retries = 2                 # on 429, 5xx, connection errors and timeouts

Read by daemon.config (these are its tables) and, as plain dicts, by the gateway worker.
"""

from __future__ import annotations

from typing import Literal

import msgspec

MIN_RESPONSE_BYTES = 1024
MAX_RESPONSE_BYTES = 1 << 30


class ProviderSection(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    kind: Literal["openai", "anthropic"]
    base_url: str
    api_key_env: str = ""  # "": the provider needs no key (a local server)
    models: list[str] = msgspec.field(default_factory=lambda: ["*"])
    timeout: float = 60.0
    max_retries: int = 2


class LlmSection(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    request_timeout: float = 600.0
    max_response_bytes: int = 16 << 20
    max_concurrent_per_agent: int = 64
    providers: dict[str, ProviderSection] = msgspec.field(default_factory=dict)


def check(llm: LlmSection, refuse: object) -> None:
    """Cross-field rules; ``refuse(key, expected, got)`` makes the ConfigError."""
    from daemon import secret_env

    assert callable(refuse)
    if llm.request_timeout <= 0:
        raise refuse("llm.request_timeout", "a number > 0", llm.request_timeout)
    if not MIN_RESPONSE_BYTES <= llm.max_response_bytes <= MAX_RESPONSE_BYTES:
        raise refuse("llm.max_response_bytes", f"an integer from {MIN_RESPONSE_BYTES} to "
                     f"{MAX_RESPONSE_BYTES} (1 GiB)", llm.max_response_bytes)
    if llm.max_concurrent_per_agent < 0:
        raise refuse("llm.max_concurrent_per_agent", "an integer >= 0 (0: no cap)",
                     llm.max_concurrent_per_agent)
    for name, p in llm.providers.items():
        where = f"llm.providers.{name}"
        if not p.base_url.startswith(("http://", "https://")):
            raise refuse(f"{where}.base_url", "an http:// or https:// URL", p.base_url)
        if p.api_key_env and not secret_env.NAME.fullmatch(p.api_key_env):
            raise refuse(f"{where}.api_key_env", "the name of an environment variable or "
                         "credential", p.api_key_env)
        if not p.models or not all(p.models):
            raise refuse(f"{where}.models", "a non-empty list of model globs", p.models)
        if p.timeout <= 0:
            raise refuse(f"{where}.timeout", "a number > 0", p.timeout)
        if not 0 <= p.max_retries <= 10:
            raise refuse(f"{where}.max_retries", "an integer from 0 to 10", p.max_retries)


def worker_options(llm: LlmSection, role_models: dict[str, list[str]],
                   content: str) -> dict[str, object]:
    """What a gateway worker needs (key names, never keys: the worker reads them)."""
    return {"providers": [{"name": name, "kind": p.kind, "base_url": p.base_url.rstrip("/"),
                           "api_key_env": p.api_key_env, "models": list(p.models),
                           "timeout": p.timeout, "max_retries": p.max_retries}
                          for name, p in llm.providers.items()],
            "role_models": role_models, "content": content,
            "request_timeout": llm.request_timeout,
            "max_response_bytes": llm.max_response_bytes}
