"""A worker's pooled outbound HTTP client (aiohttp), made on first use, inside the
running loop, and closed once: the AI gateway's providers and the agent gateway's peers
each keep one per gateway worker."""

from __future__ import annotations

import aiohttp


class PooledSession:
    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None

    def get(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=300),
                # no cookie jar: one upstream's cookies must not ride along on another
                # agent's request (and the jar's filtering per request costs CPU)
                cookie_jar=aiohttp.DummyCookieJar(), auto_decompress=True)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
