"""The providers behind the AI gateway, as one gateway worker reaches them.

One aiohttp ClientSession per worker (its connection pool is shared by every request).
A request goes to the providers whose ``models`` globs match its model and whose wire
format is the API's, in config order: each is tried up to ``max_retries`` + 1 times, with
backoff, on 429, 5xx, connection errors and timeouts, then the next one takes over.  A
provider that refuses our key (401/403) is skipped at once.  Any other answer (2xx, or a
4xx that is the request's own fault) is the answer.  Keys are read from the environment
(or credentials) when the worker gets its settings, and never leave this module but in
the request headers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any

import aiohttp
import yarl

from daemon import secret_env
from daemon.worker.http_session import PooledSession

log = logging.getLogger("llm")
RETRY_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504, 529})
BACKOFF_INITIAL = 0.1  # seconds; doubles per retry, with jitter
BACKOFF_MAX = 2.0  # and a provider's retry-after is honoured up to this
ANTHROPIC_VERSION = "2023-06-01"


@dataclass(frozen=True)
class Provider:
    name: str
    kind: str  # "openai" | "anthropic"
    base_url: str
    models: tuple[str, ...]
    timeout: float
    max_retries: int
    key: secret_env.Secret | None = field(default=None, repr=False)
    key_error: str | None = None  # why there is no key, when one is configured
    # made once, not per request: the headers without the client's, the request timeout
    base_headers: dict[str, str] = field(init=False, repr=False, compare=False)
    client_timeout: aiohttp.ClientTimeout = field(init=False, repr=False, compare=False)
    urls: dict[str, yarl.URL] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "base_headers", self._headers({}))
        object.__setattr__(self, "urls", {})
        object.__setattr__(self, "client_timeout", aiohttp.ClientTimeout(
            sock_connect=self.timeout, sock_read=self.timeout))

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> Provider:
        key, error = None, None
        if options["api_key_env"]:
            try:
                key = secret_env.read(options["api_key_env"])
            except secret_env.MissingSecret as exc:
                error = f"llm.providers.{options['name']}.api_key_env: {exc}"
                log.error("provider %s has no key: %s", options["name"], exc)
        return cls(options["name"], options["kind"], options["base_url"],
                   tuple(options["models"]), float(options["timeout"]),
                   int(options["max_retries"]), key, error)

    def url(self, path: str) -> yarl.URL:
        """The URL of ``path``, parsed once (aiohttp would parse the string per request)."""
        url = self.urls.get(path)
        if url is None:
            url = self.urls[path] = yarl.URL(self.base_url + path)
        return url

    def serves(self, model: str) -> bool:
        return any(fnmatchcase(model, pattern) for pattern in self.models)

    def headers(self, passed: dict[str, str] | None = None) -> dict[str, str]:
        """``passed``: the client's anthropic-version and anthropic-beta, if it sent them."""
        if not passed or self.kind != "anthropic":
            return self.base_headers
        return self._headers(passed)

    def _headers(self, passed: dict[str, str]) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        if self.kind == "anthropic":
            headers["anthropic-version"] = ANTHROPIC_VERSION
            headers.update(passed)
            if self.key is not None:
                headers["x-api-key"] = self.key
        elif self.key is not None:
            headers["Authorization"] = f"Bearer {self.key}"
        return headers


class ProviderFailure(Exception):
    """Every matching provider failed (or none could be asked): the agent gets 502/504."""

    def __init__(self, message: str, timed_out: bool = False) -> None:
        super().__init__(message)
        self.timed_out = timed_out


@dataclass
class Attempt:
    provider: str
    status: int | None = None  # the HTTP status, or None for a connection error/timeout
    error: str | None = None

    def record(self) -> dict[str, Any]:
        return {"provider": self.provider, "status": self.status, "error": self.error}


class Providers:
    def __init__(self, options: list[dict[str, Any]]) -> None:
        self.all = tuple(Provider.from_options(o) for o in options)
        self.http = PooledSession()
        self._matching: dict[tuple[str, str | None], list[Provider]] = {}

    def session(self) -> aiohttp.ClientSession:
        return self.http.get()

    def adopt(self, old: Providers) -> None:
        """A reload: the new settings keep the old connection pool."""
        self.http, old.http = old.http, PooledSession()

    async def close(self) -> None:
        await self.http.close()

    def matching(self, model: str, kind: str | None = None) -> list[Provider]:
        """The providers of a model, in order (globs matched once per model name)."""
        key = (model, kind)
        found = self._matching.get(key)
        if found is None:
            if len(self._matching) > 4096:  # agents choose the names: stay bounded
                self._matching.clear()
            found = self._matching[key] = [p for p in self.all if p.serves(model) and (
                kind is None or p.kind == kind)]
        return found

    async def get(self, provider: Provider, path: str) -> Any:
        """A GET (the models list) from one provider: its JSON, or None if it fails."""
        try:
            async with self.session().get(
                    provider.base_url + path, headers=provider.headers(),
                    timeout=aiohttp.ClientTimeout(total=provider.timeout)) as response:
                if response.status != 200:
                    return None
                return await response.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return None

    async def post(self, providers: list[Provider], path: str, body: bytes,
                   attempts: list[Attempt], passed: dict[str, str] | None = None,
                   ) -> tuple[Provider, aiohttp.ClientResponse]:
        """The first answer that is not worth retrying elsewhere (the caller releases
        it); ProviderFailure when there is none.  ``attempts`` gets one entry per try."""
        timed_out = False
        for provider in providers:
            if provider.key_error is not None:
                attempts.append(Attempt(provider.name, error="no key: " + provider.key_error))
                continue
            for attempt in range(provider.max_retries + 1):
                if attempt:
                    await asyncio.sleep(_backoff(attempt, attempts[-1]))
                try:
                    response = await self.session().post(
                        provider.url(path), data=body,
                        headers=provider.headers(passed), timeout=provider.client_timeout)
                except TimeoutError:
                    timed_out = True
                    attempts.append(Attempt(provider.name, error="timed out after "
                                            f"{provider.timeout:g}s"))
                    continue
                except aiohttp.ClientError as exc:
                    attempts.append(Attempt(provider.name, error=_describe(exc)))
                    continue
                tried = Attempt(provider.name, response.status)
                attempts.append(tried)
                if response.status < 400 or (response.status not in RETRY_STATUS
                                             and response.status not in (401, 403)):
                    return provider, response
                tried.error = _retry_after(response)
                response.release()
                if response.status in (401, 403):
                    log.error("provider %s refused the gateway's key (%d)", provider.name,
                              response.status)
                    break  # our key, not the request: another provider may take it
        raise ProviderFailure(_summary(attempts), timed_out and all(
            a.status is None for a in attempts))


def _describe(exc: BaseException) -> str:
    return f"{exc.__class__.__name__}: {exc}"[:200]


def _retry_after(response: aiohttp.ClientResponse) -> str | None:
    value = response.headers.get("retry-after")
    return f"retry-after {value}" if value else None


def _backoff(attempt: int, last: Attempt) -> float:
    delay = min(BACKOFF_MAX, BACKOFF_INITIAL * 2 ** (attempt - 1))
    if last.error and last.error.startswith("retry-after "):
        with contextlib.suppress(ValueError):
            delay = min(BACKOFF_MAX, max(delay, float(last.error.split()[1])))
    return float(delay * (0.5 + random.random() / 2))


def _summary(attempts: list[Attempt]) -> str:
    if not attempts:
        return "no provider could be asked"
    seen = []
    for a in attempts:
        what = f"HTTP {a.status}" if a.status is not None else (a.error or "failed")
        seen.append(f"{a.provider}: {what}")
    return "every provider failed (" + "; ".join(seen[-6:]) + ")"
