"""The daemon's health, read from its status snapshot: "healthy", or "degraded" with
one reason per thing that is down or refused while calls are still served.

`status` exits 3 when degraded; the reasons are in `status --json` (``reasons``) and under
the first line of `status`.
"""

from __future__ import annotations

import time
from typing import Any

HEALTHY, DEGRADED = "healthy", "degraded"


def assess(snapshot: dict[str, Any]) -> dict[str, Any]:
    """{"health": ..., "reasons": [...]} for a snapshot from Master.snapshot()."""
    reasons = [f"{path}: {state}" for path, state in _not_serving(snapshot["tree"], "")]
    for name, up in (snapshot.get("upstreams") or {}).items():
        if up["state"] != "up":
            reasons.append(_upstream_reason(name, up))
    plugins = snapshot.get("plugins") or {}
    fallback = plugins.get("fallback") or {}
    for path, why in sorted((plugins.get("refused") or {}).items()):
        serving = f"; serving {fallback[path]} instead" if path in fallback else ""
        reasons.append(f"plugin file refused: {path}: {why}{serving}")
    for name, peer in sorted((snapshot.get("a2a_peers") or {}).items()):
        if peer.get("error"):
            reasons.append(f"a2a peer {name}: card unavailable ({peer['error']})")
        if peer.get("held"):
            reasons.append(f"a2a peer {name}: card changed (skills or signature), held: an "
                           f"admin may accept it with [a2a.peers.{name}] accept_card = "
                           f"\"{peer['held']}\"")
    failing = (snapshot.get("audit") or {}).get("failing")
    if failing:
        reasons.append(f"audit log failing: {failing}")
    return {"health": DEGRADED if reasons else HEALTHY, "reasons": reasons}


def _upstream_reason(name: str, up: dict[str, Any]) -> str:
    since = time.strftime("%H:%M:%S", time.localtime(up["since"]))
    retry = "" if up.get("retry_in") is None else f", next try in {up['retry_in']:.0f}s"
    return f"upstream {name}: {up['state']} since {since}{retry} ({up['why']})"


def _not_serving(node: dict[str, Any], parent: str) -> list[tuple[str, str]]:
    """Children that should serve and do not (a temporary subtree that gave up is
    "stopped" by design: its upstream has its own reason)."""
    path = f"{parent}/{node['name']}" if parent else node["name"]
    if node["state"] not in ("ready", "stopped"):
        return [(path, node["state"])]
    out: list[tuple[str, str]] = []
    for child in node.get("children", []):
        out.extend(_not_serving(child, path))
    return out
