"""The chaos run's summary: a readable block, or one JSON object (``--json``)."""

from __future__ import annotations

from typing import Any

import orjson


def render(summary: dict[str, Any], as_json: bool) -> str:
    if as_json:
        return orjson.dumps(summary).decode()
    good, poison = summary["good"], summary["poison"]
    faults = summary["faults"]
    lines = [
        f"chaos: {summary['duration_s']}s, seed {summary['seed']}",
        f"settings: {compact(summary['settings']['supervision'])}, "
        f"call_timeout {summary['settings']['call_timeout']}s, "
        f"{summary['settings']['gateway_workers']} gateway workers",
        f"agents: {', '.join(summary['settings']['agents'])} "
        f"(window {summary['settings']['window']}, "
        f"{summary['settings']['rate_per_agent']:g} calls/s each)",
        f"requests {good['requests']}, ok {good['ok_percent']}%, "
        f"lost {good['lost']}, duplicates {good['duplicates']}, wrong {good['wrong']}, "
        f"audit-missing {good['audit_missing']}, "
        f"-32014 before the tool started {good['unstarted_32014']}",
        f"errors by code: {compact(good['outcomes']) or 'none'}",
        f"by door: {groups(summary['by_door'])}",
        f"by agent (and its gateway worker): {groups(summary['by_agent'])}",
        *gateway_lines(summary.get("gateways")),
        f"poison calls (bad agent, not in ok %): {poison['requests']}, answered "
        f"{compact({**poison['outcomes'], 'ok': poison['ok']}) or 'none'}",
        f"faults injected: {compact(faults['injected'])}"
        + (f"; missed: {compact(faults['missed'])}" if faults["missed"] else ""),
        *(f"fault problem: {p}" for p in faults["problems"]),
        f"memory (RSS MiB) start {summary['memory_mb']['start']['total']}, "
        f"end {summary['memory_mb']['end']['total']}; "
        f"end by process: {compact(summary['memory_mb']['end'])}",
        f"audit: {summary['audit']['records']} records; verify: {summary['audit']['verify']}",
        f"plugin: {summary['plugin']}",
        f"heal: {summary['heal']}; stop: {summary['stop']}"
        + (f"; left after stop: {summary['leftovers']}" if summary["leftovers"] else ""),
        "checks:",
        *(f"  {'PASS' if ok else 'FAIL'}  {name}" for name, ok in summary["checks"].items()),
        "PASSED" if summary["passed"] else "FAILED",
    ]
    if summary.get("state_dir"):
        lines.append(f"state dir kept: {summary['state_dir']}")
    return "\n".join(lines)


def gateway_lines(gateways: dict[str, Any] | None) -> list[str]:
    """The LLM and A2A requests (apart: their provider and peer get killed)."""
    if not gateways:
        return []
    return [
        f"LLM/A2A requests {gateways['requests']}, ok {gateways['ok_percent']}%, "
        f"lost {gateways['lost']}, duplicates {gateways['duplicates']}, wrong "
        f"{gateways['wrong']}, streams cut {gateways['cut']}, garbled {gateways['garbled']}, "
        f"audit-missing {gateways['audit_missing']}, audited twice {gateways['audit_twice']}",
        f"LLM/A2A errors: {compact(gateways['outcomes']) or 'none'}"
        + (f"; undocumented: {compact(gateways['undocumented'])}"
           if gateways["undocumented"] else "")
        + (f"; answered without a record: {compact(gateways['unaudited_fates'])}"
           if gateways["unaudited_fates"] else ""),
        f"LLM/A2A by door: {groups(gateways['by_door'])}; restarts "
        f"{compact(gateways['restarts'])}; after the chaos: {gateways['recovery']}",
    ]


def groups(breakdown: dict[str, dict[str, Any]]) -> str:
    out = []
    for name, v in breakdown.items():
        where = f" ({v['shard']})" if "shard" in v else ""
        out.append(f"{name}{where} {v['requests']} at {v['ok_percent']}%")
    return ", ".join(out)


def compact(values: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v}" for k, v in values.items())
