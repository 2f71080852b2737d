"""``[a2a]`` and ``[a2a.peers.NAME]``: the A2A agents behind the agent gateway.

    [a2a]
    request_timeout = 300.0         # a whole request to a peer, stream included
    card_refresh = 60.0             # seconds between two reads of each peer's card
    [a2a.peers.researcher]
    url = "http://10.0.0.5:9999"    # its base URL: the card is read from
                                    # <url>/.well-known/agent-card.json
    headers_env = { Authorization = "RESEARCHER_AUTH" }  # header values from the env
    timeout = 60.0                  # per request: to the answer's head, between events
    accept_card = ""                # the fingerprint of a changed card an admin accepts

Read by daemon.config (these are its tables), by the master (cards) and, as plain dicts,
by the gateway worker (forwarding).
"""

from __future__ import annotations

import re

import msgspec

PEER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")  # a URL path segment, a tool name


class PeerSection(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    url: str
    headers_env: dict[str, str] = msgspec.field(default_factory=dict)
    timeout: float = 60.0
    accept_card: str = ""


class A2aSection(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    request_timeout: float = 300.0
    card_refresh: float = 60.0
    peers: dict[str, PeerSection] = msgspec.field(default_factory=dict)


def check(a2a: A2aSection, upstreams: object, refuse: object) -> None:
    """Cross-field rules; ``refuse(key, expected, got)`` makes the ConfigError."""
    from daemon import secret_env

    assert callable(refuse)
    if "a2a" in upstreams:  # type: ignore[operator]
        raise refuse("upstreams.a2a", "another name (a2a is reserved for the a2a__NAME "
                     "tools of the agent gateway)", "a2a")
    for key in ("request_timeout", "card_refresh"):
        if getattr(a2a, key) <= 0:
            raise refuse(f"a2a.{key}", "a number > 0", getattr(a2a, key))
    for name, p in a2a.peers.items():
        where = f"a2a.peers.{name}"
        if not PEER_NAME.fullmatch(name) or "__" in name:
            raise refuse(where, "a name of letters, digits, '_', '.', '-' (no '__')", name)
        if not p.url.startswith(("http://", "https://")):
            raise refuse(f"{where}.url", "an http:// or https:// URL", p.url)
        for header, secret in p.headers_env.items():
            if not secret_env.NAME.fullmatch(secret):
                raise refuse(f"{where}.headers_env.{header}", "the name of an environment "
                             "variable or credential", secret)
        if p.timeout <= 0:
            raise refuse(f"{where}.timeout", "a number > 0", p.timeout)


def worker_options(a2a: A2aSection, role_peers: dict[str, list[str]], content: str,
                   state_dir: str) -> dict[str, object]:
    """What a gateway worker needs (secret names, never values: the worker reads them)."""
    return {"peers": {name: {"url": p.url.rstrip("/"), "headers_env": dict(p.headers_env),
                             "timeout": p.timeout}
                      for name, p in a2a.peers.items()},
            "role_peers": role_peers, "content": content,
            "request_timeout": a2a.request_timeout, "state_dir": state_dir}
