"""The settings a reload cannot change, and how a refused reload names them.

A refusal names the keys that changed, never the values of a table: an upstream's
``env``, a command line or a shipping command may carry a secret, and a refusal goes to
the log, to the CLI and into `status`.  Only single scalar settings (paths, endpoints)
show their old and new values.
"""

from __future__ import annotations

from typing import Any

import msgspec

from daemon.config import Settings


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


def refusal(old: Settings, new: Settings) -> str | None:
    """Why ``new`` cannot be applied without a restart, or None if it can."""
    scalars = {"daemon.state_dir": (old.state_dir, new.state_dir),
               "daemon.runtime_dir": (old.runtime_dir, new.runtime_dir),
               "listen.tcp": (old.config.listen.tcp, new.config.listen.tcp),
               "listen.zmq": (old.config.listen.zmq, new.config.listen.zmq),
               "listen.zmq_curve": (old.config.listen.zmq_curve, new.config.listen.zmq_curve),
               "control.endpoint": (old.control_endpoint, new.control_endpoint),
               "supervision.bus_endpoint": (old.bus_endpoint, new.bus_endpoint)}
    for key, (was, now) in scalars.items():
        if was != now:
            return f"key {key}: cannot change while running ({was} -> {now})"
    keys = [key for section in ("upstreams", "audit", "metrics")
            for key in changed_keys(section, getattr(old.config, section),
                                    getattr(new.config, section))]
    if keys:
        shown = ", ".join(keys[:5]) + (f" and {len(keys) - 5} more" if len(keys) > 5 else "")
        return f"key {shown}: cannot change while running"
    return None
