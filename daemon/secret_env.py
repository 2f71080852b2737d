"""Secrets named by `*_env` keys: read from the environment or systemd credentials.

A config never holds a secret's value, only the name of where to find it: the daemon's
environment (systemd ``EnvironmentFile=``), else ``$CREDENTIALS_DIRECTORY/<NAME>``
(systemd ``LoadCredential=``).  Values are read once, at start, and carried as ``Secret``
strings, whose repr is redacted: a secret that ends up inside a logged or formatted
container shows as '<secret>', never as its value.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

# An environment variable or credential name: what systemd accepts for both.
NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")


class MissingSecret(Exception):
    """A named secret is neither in the environment nor a credential (names, no values)."""


class Secret(str):
    """A secret value: a plain str to the code that uses it, redacted in any repr."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "'<secret>'"


def read(name: str) -> Secret:
    """The value of the secret called ``name``; raises MissingSecret saying where it looked."""
    value = os.environ.get(name)
    if value is not None:
        return Secret(value)
    credentials = os.environ.get("CREDENTIALS_DIRECTORY")
    if credentials:
        try:
            # a credential file usually ends in a newline that is no part of the secret
            return Secret((Path(credentials) / name).read_text().rstrip("\r\n"))
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise MissingSecret(f"cannot read credential {name}: {exc.strerror}") from None
    where = f" and there is no credential $CREDENTIALS_DIRECTORY/{name}" if credentials \
        else " (nor is $CREDENTIALS_DIRECTORY set)"
    raise MissingSecret(f"environment variable {name} is not set{where}")


def read_all(names: Mapping[str, str]) -> dict[str, Secret]:
    """{key: secret name} -> {key: value}; MissingSecret names the key and the secret."""
    out: dict[str, Secret] = {}
    for key, name in names.items():
        try:
            out[key] = read(name)
        except MissingSecret as exc:
            raise MissingSecret(f"{key}: {exc}") from None
    return out
