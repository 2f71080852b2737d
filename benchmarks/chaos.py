#!/usr/bin/env python3
"""The chaos harness: agents on every front door, pipelined, while faults hit the tree.

    python benchmarks/chaos.py --duration 30 [--seed N] [--json]
    python benchmarks/chaos.py --duration 3600            # the soak

It starts its own daemon (this checkout's code, a temp state dir, free ports, an upstream
MCP server on the official SDK, a fake LLM provider and an a2a-sdk peer, fast liveness
settings), drives well-behaved agents over the TCP shim, ZeroMQ, ``mcp-bridge`` and
HTTP /mcp in both MCP eras, and LLM and A2A agents (streamed and not) on the HTTP front
door, and at random moments kills gateway workers, the upstream server, the audit
process, the LLM provider and the A2A peer, SIGSTOPs a worker, swaps a plugin, reloads
the config and lets a bad agent storm with calls whose plugin hook spins.  Then it
checks that every request got exactly one response, every success is correct and
audited, LLM/A2A failures are the documented ones and no stream was silently cut,
``audit verify`` passes, the tree is back to full strength, no process is left after
``stop`` and memory did not balloon.  Exit 0 only if every check passed.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import sys
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's daemon

from benchmarks.chaos_harness import checks, gateways, plugin_files
from benchmarks.chaos_harness.agents import (
    AgentSpec,
    bad_agent,
    connect,
    good_agents,
    poison_burst,
    run_good_agent,
)
from benchmarks.chaos_harness.faults import FaultInjector
from benchmarks.chaos_harness.http_agents import A2aAgent, HttpAgent, LlmAgent
from benchmarks.chaos_harness.ledger import Ledger, RecordingClient
from benchmarks.chaos_harness.report import render
from benchmarks.chaos_harness.services import (
    LLM_KEY,
    LLM_KEY_ENV,
    OutsideServer,
    outside_servers,
)
from benchmarks.chaos_harness.target import SUPERVISION, DaemonUnderTest, all_ready
from daemon.control.status import workers_in

UPSTREAM = Path(__file__).resolve().parent / "chaos_harness" / "upstream.py"
CALL_TIMEOUT = 10.0  # the gateway's call_timeout: a stuck call answers -32016 by then
CLIENT_TIMEOUT = CALL_TIMEOUT + 5  # beyond it, a call with no answer is lost
HEAL_TIMEOUT = 20.0  # the tree must be back to full strength within this after the chaos
STORM_CALLS = 4
SWAP_GRACE = 20.0  # a drop must be serving by then (a swap step waits 15 s for a worker)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=float, default=30.0, help="seconds of chaos")
    p.add_argument("--seed", type=int, default=None, help="RNG seed (default: random)")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    p.add_argument("--window", type=int, default=8, help="calls in flight per agent")
    p.add_argument("--rate", type=float, default=60.0, help="calls/s per good agent")
    p.add_argument("--workers", type=int, default=2, help="gateway workers")
    p.add_argument("--gap", type=float, nargs=2, default=(0.3, 1.5),
                   metavar=("MIN", "MAX"), help="seconds between faults")
    p.add_argument("--min-ok", type=float, default=99.0,
                   help="the ok %% the well-behaved agents' tool calls must reach")
    p.add_argument("--min-ok-gateways", type=float, default=50.0,
                   help="the ok %% their LLM and A2A requests must reach (their provider "
                        "and peer get killed: each kill costs ~3 s of A2A, the peer's "
                        "restart and the card's re-read)")
    p.add_argument("--no-gateways", dest="gateways", action="store_false",
                   help="no LLM/A2A agents, provider or peer (MCP doors only)")
    p.add_argument("--keep", action="store_true", help="keep the state dir (logs, audit)")
    return p.parse_args(argv)


def config(state_dir: Path, plugin_dir: Path, agents: list[AgentSpec], workers: int,
           servers: dict[str, OutsideServer]) -> dict[str, dict[str, Any]]:
    sections: dict[str, dict[str, Any]] = {
        "daemon": {"state_dir": str(state_dir), "gateway_workers": workers},
        "supervision": SUPERVISION,
        "listen": {"tcp": "127.0.0.1:0", "zmq": "tcp://127.0.0.1:*", "http": "127.0.0.1:0"},
        "gateway": {"call_timeout": CALL_TIMEOUT},
        "plugins": {"dirs": [str(plugin_dir)]},
        "metrics": {"listen": "127.0.0.1:0"},
        "roles.chaos": {"tools": ["*"], "models": ["*"], "peers": ["*"]},
        "upstreams.notes": {"command": [sys.executable, str(UPSTREAM)]},
        **(gateways.sections(servers) if servers else {}),
    }
    for spec in agents:
        sections[f"agents.{spec.name}"] = {"token_sha256": spec.token_sha256,
                                           "roles": ["chaos"]}
    return sections


async def wait_healed(target: DaemonUnderTest, names: set[str]) -> tuple[bool, str]:
    """The tree back to full strength: the same workers as at start, all ready."""
    deadline = time.monotonic() + HEAL_TIMEOUT
    what = ""
    while time.monotonic() < deadline:
        snapshot = await target.astatus()
        workers = workers_in(snapshot["tree"])
        if set(workers) == names and all_ready(snapshot) and snapshot["daemon"]["healthy"]:
            return True, f"{len(workers)} workers ready"
        what = ", ".join(f"{n} {w['state']}" for n, w in sorted(workers.items())
                         if w["state"] != "ready") or f"workers {sorted(workers)}"
        await asyncio.sleep(0.2)
    return False, f"not healed after {HEAL_TIMEOUT:g}s: {what}"


async def plugin_settled(target: DaemonUnderTest, version: int) -> tuple[bool, str]:
    """The last version of ``swapped`` dropped is the one serving (a swap is never lost)."""
    deadline = time.monotonic() + SWAP_GRACE
    while True:
        plugins = (await target.astatus())["plugins"]
        serving = {p["name"]: p["version"] for p in plugins["loaded"]}.get("swapped")
        if serving == version:
            return True, f"swapped v{serving} serving, the last dropped"
        if time.monotonic() > deadline:
            refused = "; ".join(f"{path}: {why}" for path, why in plugins["refused"].items())
            return False, (f"swapped v{serving} serving, but v{version} was dropped last"
                           + (f"; refused: {refused}" if refused else ""))
        await asyncio.sleep(0.2)


def shard(agent: str, workers: int) -> str:
    """The gateway worker an agent's calls go to (documented: crc32(agent) % workers)."""
    return f"gateway-{zlib.crc32(agent.encode()) % workers}"


async def track(target: DaemonUnderTest, until: float) -> None:
    """Remember every process of the daemon while the chaos runs (for the orphan check)."""
    while time.monotonic() < until:
        target.track()
        await asyncio.sleep(0.25)


async def drive(args: argparse.Namespace, target: DaemonUnderTest, plugin_dir: Path,
                rng: random.Random, servers: dict[str, OutsideServer]) -> dict[str, Any]:
    ledger = Ledger()
    start_snapshot = target.status()
    names = set(workers_in(start_snapshot["tree"]))
    goods = good_agents(bool(servers))
    clients: list[RecordingClient | HttpAgent] = []
    try:
        for spec in goods:
            clients.append(await connect(spec, target))
        bad = await connect(bad_agent(), target)
        assert isinstance(bad, RecordingClient)
        clients.append(bad)
        memory_start = target.memory()

        async def storm() -> None:
            await poison_burst(bad, ledger, STORM_CALLS, CLIENT_TIMEOUT)

        faults = FaultInjector(target, rng, plugin_dir, storm, servers)
        started = time.monotonic()
        until = started + args.duration
        await asyncio.gather(
            *(run_good_agent(spec, client, ledger, random.Random(rng.random()), until,
                             args.window, args.rate, CLIENT_TIMEOUT)
              for spec, client in zip(goods, clients, strict=False)),
            faults.run(until - 1.0, tuple(args.gap)),
            track(target, until))
        await asyncio.sleep(0.5)  # a duplicate answer would arrive about now
        elapsed = time.monotonic() - started
        healed, heal_note = await wait_healed(target, names)
        swapped, swap_note = await plugin_settled(target, faults.swapped_version)
        recovery = await gateways.recovered(
            [c for c in clients if isinstance(c, LlmAgent | A2aAgent)], ledger,
            random.Random(rng.random()), CLIENT_TIMEOUT)
        memory_end = target.memory()
    finally:
        for client in clients:
            await client.close()
    stopped, stop_note = await target.stop()
    await asyncio.sleep(0.5)  # let the reaped go
    leftovers = target.leftovers()
    audit = await asyncio.to_thread(checks.AuditIndex.read, target.state_dir / "audit")
    verify_rc, verify_out, verify_err = await target.cli("audit", "verify", timeout=300)
    tool_calls, gateway_requests = checks.by_kind(ledger.requests)
    good_requests, bad_requests = checks.split(tool_calls)
    good, poison = checks.tally(good_requests, audit), checks.tally(bad_requests, audit)
    gateway_summary, gateway_checks = gateways.summarize(
        gateway_requests, audit, servers, recovery, args.min_ok_gateways)
    summary: dict[str, Any] = {
        "seed": args.seed, "duration_s": round(elapsed, 1),
        "settings": {"supervision": SUPERVISION, "call_timeout": CALL_TIMEOUT,
                     "gateway_workers": args.workers, "agents": [s.name for s in goods],
                     "window": args.window, "rate_per_agent": args.rate,
                     "fault_gap_s": list(args.gap), "fault_weights": faults.weights},
        "good": good.as_dict(), "by_door": checks.breakdown(good_requests, "door"),
        "by_agent": {name: {**v, "shard": shard(name, args.workers)} for name, v in
                     checks.breakdown(ledger.requests, "agent").items()},
        "poison": poison.as_dict(),
        "gateways": gateway_summary if servers else None,
        "faults": {"injected": dict(sorted(faults.injected.items())),
                   "missed": dict(sorted(faults.missed.items())),
                   "problems": faults.problems, "timeline": sorted(faults.timeline)},
        "audit": {"records": audit.records, "unreadable_lines": audit.unreadable,
                  "verify": (verify_out + verify_err).strip()},
        "memory_mb": {"start": mb(memory_start), "end": mb(memory_end)},
        "plugin": swap_note, "stop": stop_note, "heal": heal_note, "leftovers": leftovers,
    }
    summary["checks"] = {
        "exactly one response per request":
            good.verdicts["lost"] + good.duplicates + poison.verdicts["lost"]
            + poison.duplicates == 0,
        "every success correct": good.verdicts["wrong"] + poison.verdicts["wrong"] == 0,
        "every success audited": good.audit_missing + poison.audit_missing == 0,
        "-32014 only after the tool started":
            good.unstarted_32014 + poison.unstarted_32014 == 0,
        "poison calls denied or -32018/-32019": checks.bad_agent_unexpected(poison) == 0,
        "audit verify passes": verify_rc == 0,
        "tree back to full strength": healed,
        "the last plugin version dropped serves": swapped,
        "no process left after stop": stopped and not leftovers,
        "memory bounded": not checks.memory_grew_too_much(memory_start, memory_end),
        f"ok >= {args.min_ok:g}% (well-behaved agents)": good.ok_percent >= args.min_ok,
        **(gateway_checks if servers else {}),
    }
    summary["passed"] = all(summary["checks"].values())
    return summary


def mb(rss: dict[str, int]) -> dict[str, float]:
    out = {name: round(v / 2**20, 1) for name, v in sorted(rss.items())}
    out["total"] = round(sum(rss.values()) / 2**20, 1)
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.seed is None:
        args.seed = random.randrange(2**32)
    state_dir = Path(tempfile.mkdtemp(prefix="wa-chaos-", dir="/tmp"))  # short: ipc paths
    plugin_dir = state_dir / "plugins"
    plugin_dir.mkdir()
    plugin_files.drop(plugin_dir, "poison", plugin_files.POISON)
    plugin_files.drop(plugin_dir, "swapped", plugin_files.swapped_source(1))
    servers = {s.name: s for s in outside_servers()} if args.gateways else {}
    summary: dict[str, Any] = {"passed": False}
    target: DaemonUnderTest | None = None
    try:
        for server in servers.values():
            server.start()
        target = DaemonUnderTest(state_dir, config(
            state_dir, plugin_dir, [*good_agents(bool(servers)), bad_agent()], args.workers,
            servers), {LLM_KEY_ENV: LLM_KEY})
        target.start()
        summary = asyncio.run(drive(args, target, plugin_dir, random.Random(args.seed),
                                    servers))
    finally:
        if target is not None:
            target.kill_everything()
        for server in servers.values():
            server.kill()
        keep = args.keep or not summary["passed"]
        summary["state_dir"] = str(state_dir) if keep else None
        if not keep:
            shutil.rmtree(state_dir, ignore_errors=True)
    print(render(summary, as_json=args.json))
    return 0 if summary["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
