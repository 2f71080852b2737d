"""The human view of `status`: the tree, one line per child."""

from __future__ import annotations

from typing import Any


def _duration(seconds: float | None) -> str:
    if not seconds:
        return "-"
    s = int(seconds)
    if s < 60:
        return f"{seconds:.1f}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def _size(rss: int | None) -> str:
    if rss is None:
        return "-"
    return f"{rss / 1048576:.1f}M"


def _cpu(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def refused_lines(plugins: dict[str, Any], label: str) -> list[str]:
    """One line per refused plugin file: why, and what serves in its place."""
    fallback = plugins.get("fallback") or {}
    lines = []
    for path, why in sorted((plugins.get("refused") or {}).items()):
        instead = f"serving {fallback[path]} instead" if path in fallback \
            else "nothing of it serves"
        lines.append(f"{label} {path}: {why}; {instead}")
    return lines


def render_status(snapshot: dict[str, Any]) -> str:
    d = snapshot["daemon"]
    health = "DEGRADED" if snapshot.get("health", "healthy") != "healthy" else "healthy"
    lines = [
        f"workingagents {d['version']}  pid {d['pid']}  up {_duration(d['uptime'])}  "
        f"{health}  config {d['config'] or 'built-in defaults'}",
        *(f"  {reason}" for reason in snapshot.get("reasons", [])),
        f"{'NAME':<28} {'PID':>7} {'STATE':<9} {'RESTARTS':>8} {'UPTIME':>8} {'CPU%':>6} "
        f"{'RSS':>8}  LAST EXIT",
        f"{'master':<28} {d['pid']:>7} {'stopping' if d['stopping'] else 'running':<9} "
        f"{'-':>8} {_duration(d['uptime']):>8} {_cpu(d['cpu_percent']):>6} "
        f"{_size(d['rss']):>8}",
    ]
    _walk(snapshot["tree"], "", True, lines, root=True)
    plugins = snapshot.get("plugins") or {}
    loaded = ", ".join(f"{p['name']} v{p['version']}" for p in plugins.get("loaded", []))
    lines.append(f"plugins: {loaded or 'none'}")
    lines += refused_lines(plugins, "plugin REFUSED")
    audit = snapshot.get("audit") or {}
    if audit:
        state = f"FAILING: {audit['failing']}" if audit.get("failing") else "writing"
        lines.append(f"audit: {state} {audit['file']}, {audit['records']} records "
                     f"(fsync {audit['fsync']}, {audit['checkpointed']} checkpointed)")
    for q in snapshot.get("quarantine") or []:
        lines.append(f"agent QUARANTINED {q['agent']}: retry in {q['retry_after']:.0f}s "
                     f"({q['reason']})")
    if d.get("last_reload"):
        lines.append(f"last reload: {d['last_reload']}")
    return "\n".join(lines)


def _walk(node: dict[str, Any], prefix: str, last: bool, lines: list[str],
          root: bool = False) -> None:
    branch = "" if root else ("└─ " if last else "├─ ")
    name = prefix + branch + node["name"]
    if node["kind"] == "supervisor":
        i = node["intensity"]
        detail = f"{node['strategy']}, {i['recent']}/{i['max_restarts']} in {i['max_seconds']:g}s"
        lines.append(f"{name:<28} {'-':>7} {node['state']:<9} {node['restarts']:>8} "
                     f"{_duration(node['uptime']):>8} {'':>6} {'':>8}  [{detail}]"
                     + (f" {node['last_exit']}" if node.get("last_exit") else "")
                     + (f"; next probe in {node['next_probe']:.0f}s"
                        if node.get("next_probe") is not None else ""))
        child_prefix = prefix + ("" if root else ("   " if last else "│  "))
        kids = node["children"]
        for n, child in enumerate(kids):
            _walk(child, child_prefix, n == len(kids) - 1, lines)
        return
    pid = node["pid"] if node["pid"] else "-"
    lines.append(f"{name:<28} {pid:>7} {node['state']:<9} {node['restarts']:>8} "
                 f"{_duration(node['uptime']):>8} {_cpu(node['cpu_percent']):>6} "
                 f"{_size(node['rss']):>8}  {node['last_exit'] or ''}")
