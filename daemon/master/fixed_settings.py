"""Refusing a reload that changes what a running daemon cannot change, and its wording.

Which keys those are is declared beside them in daemon/config.py
(``Annotated[..., FIXED]``); this compares old and new settings by those marks.  A
refusal names the keys that changed, never the values of a table: an upstream's ``env``,
a command line or a shipping command may carry a secret, and a refusal goes to the log,
to the CLI and into `status`.  Only a single fixed scalar (a path, an endpoint) shows its
old and new values.
"""

from __future__ import annotations

import functools
import typing
from collections.abc import Iterator
from typing import Any

import msgspec

from daemon.config import FIXED, Settings

SHOWN = 5  # keys named in a refusal before "and N more"


def changed_keys(prefix: str, was: Any, now: Any) -> list[str]:
    """The dotted keys under ``prefix`` whose values differ (no values in the answer)."""
    if was == now:
        return []
    if isinstance(was, msgspec.Struct) and type(was) is type(now):
        return [key for field in was.__struct_fields__
                for key in changed_keys(f"{prefix}.{field}", getattr(was, field),
                                        getattr(now, field))]
    if isinstance(was, dict) and isinstance(now, dict):
        return [key for name in sorted(was.keys() | now.keys(), key=str)
                for key in changed_keys(f"{prefix}.{name}", was.get(name), now.get(name))]
    return [prefix]


@functools.cache
def _marked(section: type[msgspec.Struct]) -> frozenset[str]:
    hints = typing.get_type_hints(section, include_extras=True)
    return frozenset(name for name, hint in hints.items()
                     if FIXED in getattr(hint, "__metadata__", ()))


def fixed_values(section: msgspec.Struct, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted key, value) of every fixed key in ``section`` and the sections under it
    (tables of tables, like [agents.*], are not searched: none of theirs is fixed)."""
    marked = _marked(type(section))
    for name in section.__struct_fields__:
        value, key = getattr(section, name), f"{prefix}{name}"
        if name in marked:
            yield key, value
        elif isinstance(value, msgspec.Struct):
            yield from fixed_values(value, f"{key}.")


def refusal(old: Settings, new: Settings) -> str | None:
    """Why ``new`` cannot be applied without a restart, or None if it can."""
    scalars: list[str] = []
    keys: list[str] = []
    for (key, was), (_, now) in zip(fixed_values(old.config), fixed_values(new.config),
                                    strict=True):
        was, now = old.in_force(key, was), new.in_force(key, now)
        if was == now:
            continue
        if isinstance(was, msgspec.Struct | dict | list):
            keys += changed_keys(key, was, now)  # a table: its keys, never its values
        else:
            scalars.append(f"key {key}: cannot change while running ({was} -> {now})")
    if scalars:
        return scalars[0]
    if keys:
        more = f" and {len(keys) - SHOWN} more" if len(keys) > SHOWN else ""
        return f"key {', '.join(keys[:SHOWN])}{more}: cannot change while running"
    return None
