"""The A2A peers as one gateway worker reaches them: one aiohttp session per worker.

A request goes to the peer's JSON-RPC endpoint: the JSON-RPC interface of the card the
master accepted (the master tells the workers, daemon.a2a.cards), else the peer's base
URL.  Auth headers come from the environment (``headers_env``), read when the worker
gets its settings; the agent's own token never leaves the gateway.  No retries: a
message may have effects, and the peer's answer, or its failure, is the agent's.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from daemon import secret_env
from daemon.a2a.binding import VERSION_HEADER
from daemon.worker.http_session import PooledSession

log = logging.getLogger("a2a")
MAX_ANSWER_BYTES = 16 << 20  # a whole (not streamed) answer larger than this is refused


@dataclass(frozen=True)
class Peer:
    name: str
    url: str
    timeout: float
    endpoint: str = ""  # the accepted card's JSON-RPC URL ("" until a card is read)
    held: bool = False  # its card changed and waits for an admin (daemon.a2a.cards)
    headers: dict[str, str] = field(default_factory=dict, repr=False)
    header_error: str | None = None

    @classmethod
    def from_options(cls, name: str, options: dict[str, Any],
                     learned: dict[str, Any]) -> Peer:
        headers: dict[str, str] = {}
        error = None
        try:
            headers = dict(secret_env.read_all(options.get("headers_env") or {}))
        except secret_env.MissingSecret as exc:
            error = f"a2a.peers.{name}.headers_env.{exc}"
            log.error("peer %s has no auth header: %s", name, exc)
        return cls(name, str(options["url"]), float(options["timeout"]),
                   str(learned.get("endpoint") or ""), bool(learned.get("held")), headers,
                   error)

    @property
    def target(self) -> str:
        return self.endpoint or self.url


class PeerFailure(Exception):
    """The peer could not be reached, or did not answer in time."""


class PeerClient:
    def __init__(self) -> None:
        self.http = PooledSession()

    def session(self) -> aiohttp.ClientSession:
        return self.http.get()

    async def close(self) -> None:
        await self.http.close()

    async def post(self, peer: Peer, body: bytes, version: str,
                   stream: bool) -> aiohttp.ClientResponse:
        """The peer's answer (its head read; the caller reads and releases the rest)."""
        if peer.header_error is not None:
            raise PeerFailure(f"no auth header: {peer.header_error}")
        headers = {"Content-Type": "application/json",
                   "Accept": "text/event-stream" if stream else "application/json",
                   **peer.headers}
        if version:
            headers[VERSION_HEADER] = version
        try:
            response = await self.session().post(
                peer.target, data=body, headers=headers, allow_redirects=False,
                timeout=aiohttp.ClientTimeout(sock_connect=peer.timeout,
                                              sock_read=peer.timeout))
        except TimeoutError:
            raise PeerFailure(f"timed out after {peer.timeout:g}s") from None
        except aiohttp.ClientError as exc:
            raise PeerFailure(f"{exc.__class__.__name__}: {exc}"[:200]) from None
        if 300 <= response.status < 400:  # never followed: its auth headers and the
            response.close()  # message go to the peer's own URL, nowhere else
            log.error("peer %s redirected (HTTP %d); not followed: set its url (or accept "
                      "a card) that names the final URL", peer.name, response.status)
            raise PeerFailure(f"it redirected (HTTP {response.status}); redirects are not "
                              "followed")
        return response
