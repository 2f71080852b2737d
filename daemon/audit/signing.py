"""Ed25519 signed checkpoints: (record count, chain head) under the daemon's key.

A local chain proves that nothing inside it was edited, but not that its tail was not
cut off: the checkpoints say how far the log had come, and a copy of them shipped
elsewhere (a directory on another disk or host, or a command) survives an attacker who
rewrites the whole audit dir.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

KEY_FILE = "audit.key"
CHECKPOINTS = "checkpoints.jsonl"


def load_or_create_key(state_dir: Path) -> Ed25519PrivateKey:
    """The signing key, created (owner-only) on first use."""
    path = state_dir / KEY_FILE
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except FileNotFoundError:
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
            os.fsync(f.fileno())
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{path}: not an Ed25519 private key")
    return key


def public_text(key: Ed25519PrivateKey | Ed25519PublicKey) -> str:
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return "ed25519:" + base64.b64encode(raw).decode()


def parse_public(text: str) -> Ed25519PublicKey:
    scheme, _, data = text.strip().partition(":")
    if scheme != "ed25519":
        raise ValueError(f"not an ed25519:BASE64 public key: {text[:40]!r}")
    return Ed25519PublicKey.from_public_bytes(base64.b64decode(data))


def _signed_bytes(n: int, head: str, t: float) -> bytes:
    return f"workingagents-audit-checkpoint:v1\n{n}\n{head}\n{t!r}".encode()


def sign(key: Ed25519PrivateKey, n: int, head: str, t: float) -> dict[str, Any]:
    """A checkpoint: the log held ``n`` records and its chain head was ``head``."""
    signature = key.sign(_signed_bytes(n, head, t))
    return {"n": n, "head": head, "t": t, "key": public_text(key),
            "sig": base64.b64encode(signature).decode()}


def check(public: Ed25519PublicKey, checkpoint: dict[str, Any]) -> bool:
    try:
        public.verify(base64.b64decode(checkpoint["sig"]),
                      _signed_bytes(int(checkpoint["n"]), str(checkpoint["head"]),
                                    float(checkpoint["t"])))
    except (InvalidSignature, KeyError, TypeError, ValueError):
        return False
    return True
