"""The A2A peers' agent cards, kept fresh by the master (which serves them).

Why the master: it serves ``GET /a2a/NAME/.well-known/agent-card.json`` itself (no hop
to a worker for a small, cached document), it owns `status`, and a card read is one
small GET per peer per ``[a2a] card_refresh`` seconds with a timeout and a size cap, on
its event loop beside the HTTP front: it can neither block nor crash the master (every
failure is a value: the peer's card is "unavailable", a reason in `status`).

Pinning, as the injection plugin pins tool definitions: the first card read is pinned
(its fingerprint: sha256 of its skills and signatures, canonical JSON).  A card whose
fingerprint changes is held: the pinned card is still served, messages to the peer are
denied, and `status` says which fingerprint an admin may accept with ``[a2a.peers.NAME]
accept_card = "…"`` and a reload.  Pins live in <state_dir>/a2a/cards.json, so a
restart does not forget them.

The workers learn, per peer: the JSON-RPC endpoint of the accepted card, whether the
peer is held, and the card's description (the a2a__NAME tool's) (``learned()``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import orjson

from daemon import secret_env
from daemon.a2a.settings import A2aSection, PeerSection

if TYPE_CHECKING:
    from daemon.config import Settings

log = logging.getLogger("a2a")
CARD_PATH = "/.well-known/agent-card.json"
MAX_CARD_BYTES = 256 << 10


@dataclass
class PeerCard:
    card: dict[str, Any] | None = None  # the accepted card, as the peer served it
    fingerprint: str = ""  # ... and its fingerprint (the pin)
    held: str = ""  # the fingerprint of a changed card waiting for an admin
    held_card: dict[str, Any] | None = None
    error: str = ""  # why the last read failed ("": it did not)
    read_at: float = 0.0


def fingerprint(card: dict[str, Any]) -> str:
    body = orjson.dumps([card.get("skills") or [], card.get("signatures") or []],
                        option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(body).hexdigest()[:16]


def endpoint(card: dict[str, Any] | None) -> str:
    """The URL of the card's JSON-RPC interface (v1.0 supportedInterfaces, or v0.3
    url + preferredTransport/additionalInterfaces); "" if it names none."""
    if not card:
        return ""
    for iface in card.get("supportedInterfaces") or ():
        if isinstance(iface, dict) and iface.get("protocolBinding") == "JSONRPC" \
                and isinstance(iface.get("url"), str):
            return str(iface["url"])
    if isinstance(card.get("url"), str) and card.get("preferredTransport", "JSONRPC") \
            == "JSONRPC":
        return str(card["url"])
    for iface in card.get("additionalInterfaces") or ():
        if isinstance(iface, dict) and iface.get("transport") == "JSONRPC" \
                and isinstance(iface.get("url"), str):
            return str(iface["url"])
    return ""


def rewritten(card: dict[str, Any], url: str) -> dict[str, Any]:
    """The card as the gateway serves it: its one interface is the gateway's JSON-RPC
    URL (other bindings would bypass the gateway), and a signature the rewrite
    invalidates is dropped."""
    out = {k: v for k, v in card.items() if k not in ("signatures", "additionalInterfaces")}
    version = "1.0"
    for iface in card.get("supportedInterfaces") or ():
        if isinstance(iface, dict) and iface.get("protocolBinding") == "JSONRPC":
            version = str(iface.get("protocolVersion") or version)
            break
    if "supportedInterfaces" in card or "url" not in card:
        out["supportedInterfaces"] = [{"url": url, "protocolBinding": "JSONRPC",
                                       "protocolVersion": version}]
    if "url" in card:  # a v0.3 card
        out["url"] = url
        out["preferredTransport"] = "JSONRPC"
    return out


def role_peers(settings: Settings) -> dict[str, list[str]]:
    return {name: list(r.peers) for name, r in settings.config.roles.items()}


class CardKeeper:
    def __init__(self, a2a: A2aSection, state_dir: Path,
                 on_learned: Callable[[dict[str, Any]], None],
                 role_peers: dict[str, list[str]] | None = None) -> None:
        self.a2a = a2a
        self.role_peers = role_peers or {}  # role -> peer globs (who may see which card)
        self.path = state_dir / "a2a" / "cards.json"
        self.on_learned = on_learned
        self.cards: dict[str, PeerCard] = {}
        self._session: aiohttp.ClientSession | None = None
        self._wake = asyncio.Event()
        self._load()

    def _load(self) -> None:
        try:
            pins = orjson.loads(self.path.read_bytes())
        except (FileNotFoundError, orjson.JSONDecodeError):
            pins = {}
        for name, pin in pins.items() if isinstance(pins, dict) else ():
            if name in self.a2a.peers and isinstance(pin, dict):
                self.cards[name] = PeerCard(pin.get("card"), str(pin.get("fingerprint", "")))

    def _save(self) -> None:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        pins = {name: {"fingerprint": c.fingerprint, "card": c.card}
                for name, c in self.cards.items() if c.card is not None}
        tmp = self.path.with_suffix(".tmp")
        tmp.write_bytes(orjson.dumps(pins))
        os.replace(tmp, self.path)

    def apply(self, settings: Settings) -> list[str]:
        """A reload: new peers are read at once; an accepted fingerprint takes effect."""
        a2a = settings.config.a2a
        self.role_peers = role_peers(settings)
        if a2a == self.a2a:
            return []
        self.a2a = a2a
        for name in list(self.cards):
            if name not in a2a.peers:
                del self.cards[name]
        for name, peer in a2a.peers.items():
            self._accept(name, peer)
        self._save()
        self._wake.set()
        self.on_learned(self.learned())
        return ["a2a peers"]

    def _accept(self, name: str, peer: PeerSection) -> None:
        kept = self.cards.get(name)
        if kept is not None and kept.held and peer.accept_card == kept.held:
            log.warning("a2a peer %s: changed card %s accepted by the admin", name, kept.held)
            kept.card, kept.fingerprint = kept.held_card, kept.held
            kept.held, kept.held_card = "", None

    async def run(self) -> None:
        """Read every card now, then every ``card_refresh`` seconds (or at a reload)."""
        try:
            while True:
                learned = self.learned()
                await asyncio.gather(*(self.refresh(n) for n in list(self.a2a.peers)))
                if self.learned() != learned:
                    self.on_learned(self.learned())
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.a2a.card_refresh)
        finally:
            if self._session is not None:
                await self._session.close()

    async def refresh(self, name: str) -> None:
        peer = self.a2a.peers.get(name)
        if peer is None:
            return
        kept = self.cards.setdefault(name, PeerCard())
        try:
            card = await self._read(peer)
        except Exception as exc:  # every failure is a value: the card is unavailable
            why = f"{exc.__class__.__name__}: {exc}"[:200] if str(exc) else \
                exc.__class__.__name__
            if kept.error != why:
                log.warning("a2a peer %s: card unavailable: %s", name, why)
            kept.error = why
            return
        kept.error, kept.read_at = "", time.time()
        seen = fingerprint(card)
        if not kept.fingerprint or seen == kept.fingerprint or seen == peer.accept_card:
            changed = kept.card != card
            kept.card, kept.fingerprint, kept.held, kept.held_card = card, seen, "", None
            if changed:
                self._save()
        elif seen != kept.held:
            log.warning("a2a peer %s: its card changed (skills or signature: %s -> %s); "
                        "held until an admin accepts %s", name, kept.fingerprint, seen, seen)
            kept.held, kept.held_card = seen, card

    async def _read(self, peer: PeerSection) -> dict[str, Any]:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        headers = dict(secret_env.read_all(peer.headers_env))
        async with self._session.get(
                peer.url.rstrip("/") + CARD_PATH, headers=headers, allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=peer.timeout)) as response:
            if response.status != 200:
                raise ValueError(f"HTTP {response.status}")
            body = await response.content.read(MAX_CARD_BYTES + 1)
        if len(body) > MAX_CARD_BYTES:
            raise ValueError(f"the card is larger than {MAX_CARD_BYTES} bytes")
        card = orjson.loads(body)
        if not isinstance(card, dict) or not isinstance(card.get("name"), str):
            raise ValueError("not an agent card (a JSON object with a name)")
        return card

    # -- what others read ------------------------------------------------------------

    def visible(self, roles: tuple[str, ...], name: str) -> bool:
        """Whether an agent with these roles may see (and message) the peer ``name``."""
        return name in self.a2a.peers and ("admin" in roles or any(
            fnmatchcase(name, p) for r in roles for p in self.role_peers.get(r, ())))

    def served(self, name: str, url: str) -> dict[str, Any] | None:
        kept = self.cards.get(name)
        if kept is None or kept.card is None:
            return None
        return rewritten(kept.card, url)

    def learned(self) -> dict[str, Any]:
        return {name: {"endpoint": endpoint(c.card), "held": bool(c.held),
                       "description": str((c.card or {}).get("description") or "")[:500]}
                for name, c in self.cards.items()}

    def status(self) -> dict[str, Any]:
        return {name: {"available": not c.error and c.card is not None,
                       "error": c.error or None, "fingerprint": c.fingerprint or None,
                       "held": c.held or None, "read_at": c.read_at or None}
                for name, c in self.cards.items()}
