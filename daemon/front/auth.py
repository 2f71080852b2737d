"""Bearer tokens and Curve keys -> agents.

Agents are configured with the sha256 of their token, a Curve public key (checked at the
handshake by front.zap, then looked up on every request), or both; the local admin
token is generated once into <state_dir>/admin.token (0600) for the CLI.  Tokens are
never logged or forwarded; only their digests are kept.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path

from daemon.config import Settings

ADMIN = "admin"  # the local administrator; its role "admin" may see and call every tool


@dataclass(frozen=True)
class Agent:
    name: str
    roles: tuple[str, ...]
    token_sha256: str = field(default="", repr=False, compare=False)


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def admin_token_path(state_dir: Path) -> Path:
    return state_dir / "admin.token"


def ensure_admin_token(state_dir: Path) -> str:
    path = admin_token_path(state_dir)
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        token = secrets.token_urlsafe(32)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(token + "\n")
        return token


class Authenticator:
    def __init__(self, settings: Settings, admin_token: str) -> None:
        admin = digest(admin_token)
        self._by_digest: dict[str, Agent] = {admin: Agent(ADMIN, (ADMIN,), admin)}
        self._by_curve_key: dict[str, Agent] = {}
        # tokens that matched, so a busy agent's digest is taken once (a reload makes a
        # new Authenticator, so a revoked token leaves with it); only valid tokens, so
        # bounded by the agents.  A str key's lookup compares the secret only after its
        # keyed 64-bit hash matched, so it leaks no more timing than the digest lookup.
        self._known: dict[str, Agent] = {}
        # what resources each role may see (the gateway workers hold the same globs; the
        # master needs them for resource subscriptions, which it keeps)
        self._resources = {name: tuple(r.resources) for name, r in
                           settings.config.roles.items()}
        for name, agent in settings.config.agents.items():
            key = agent.token_sha256.lower()
            if key:
                self._by_digest[key] = Agent(name, tuple(agent.roles), key)
            if agent.curve_public_key:
                self._by_curve_key[agent.curve_public_key] = Agent(name, tuple(agent.roles),
                                                                   key)

    def admits_the_same(self, other: Authenticator) -> bool:
        """Whether ``other`` knows the same tokens and keys, as the same agents."""
        return (self._by_digest, self._by_curve_key, self._resources) == (
            other._by_digest, other._by_curve_key, other._resources)

    def may_read(self, agent: Agent, uri: str) -> bool:
        """Whether the agent's roles let it see a resource (as gateway.permissions)."""
        return ADMIN in agent.roles or any(
            fnmatchcase(uri, pattern) for role in agent.roles
            for pattern in self._resources.get(role, ()))

    def agent_for(self, token: object) -> Agent | None:
        if not isinstance(token, str) or not token:
            return None
        known = self._known.get(token)
        if known is not None:
            return known
        # Keyed by the digest of the presented token: the lookup's timing depends on that
        # digest, never on how much of a secret matched, so it needs no constant-time
        # compare (sha256 preimages stay out of reach).
        agent = self._by_digest.get(digest(token))
        if agent is not None:
            self._known[token] = agent
        return agent

    def current(self, agent: Agent) -> Agent | None:
        """What a session authenticated earlier is now: None once its token is revoked
        (or replaced) by a reload, so an open connection loses access with it."""
        return self._by_digest.get(agent.token_sha256)

    def agent_for_curve_key(self, key: str | None) -> Agent | None:
        """The agent whose [agents.NAME] curve_public_key (Z85) this is, in this config: a
        public key, so a plain lookup."""
        return self._by_curve_key.get(key) if key else None
