"""The agents: well-behaved ones on every front door and in both MCP eras, each keeping a
window of calls in flight, and one bad agent whose calls spin a plugin hook.

Every call's arguments are unique in the run, so its audit record can be found by their
digest, and its answer checked exactly: ``echo`` must return the arguments, the
upstream's ``notes__add`` their sum.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import time
from dataclasses import dataclass
from typing import cast

import orjson

from benchmarks.chaos_harness.ledger import Ledger, RecordingClient, Request
from benchmarks.chaos_harness.target import CLI, ENV, DaemonUnderTest

DOORS = ("tcp", "zmq", "bridge")  # the bridge is `workingagents mcp-bridge` on stdio
BAD_AGENT = "mallory"
UPSTREAM_SHARE = 0.25  # of the good agents' calls go to the upstream MCP server


@dataclass(frozen=True)
class AgentSpec:
    name: str
    door: str
    stateless: bool

    @property
    def token(self) -> str:
        return f"chaos-token-{self.name}"

    @property
    def token_sha256(self) -> str:
        return hashlib.sha256(self.token.encode()).hexdigest()


def good_agents() -> list[AgentSpec]:
    return [AgentSpec(f"{door}-{'stateless' if stateless else 'handshake'}", door, stateless)
            for door in DOORS for stateless in (False, True)]


def bad_agent() -> AgentSpec:
    return AgentSpec(BAD_AGENT, "tcp", False)


async def connect(spec: AgentSpec, target: DaemonUnderTest) -> RecordingClient:
    listen = target.listen()
    client: RecordingClient
    if spec.door == "tcp":
        host, _, port = listen["tcp"].rpartition(":")
        client = cast(RecordingClient, await RecordingClient.tcp(host, int(port), spec.token,
                                                                 spec.stateless))
    elif spec.door == "zmq":
        client = cast(RecordingClient, await RecordingClient.zmq(listen["zmq"], spec.token,
                                                                 spec.stateless))
    else:
        argv = [*CLI, "mcp-bridge", "--config", str(target.config)]
        client = await RecordingClient.bridge(argv, ENV, spec.token, spec.stateless)
    client.door = spec.door
    return client


def next_request(spec: AgentSpec, ledger: Ledger, rng: random.Random) -> Request:
    n = ledger.unique()
    if rng.random() < UPSTREAM_SHARE:
        a, b = n * 1000 + rng.randrange(1000), rng.randrange(1_000_000)
        return Request(spec.name, spec.door, "notes__add", {"a": a, "b": b}, str(a + b))
    arguments = {"text": f"{spec.name} #{n} {rng.getrandbits(32):08x}", "n": n}
    return Request(spec.name, spec.door, "echo", arguments, orjson.dumps(arguments).decode())


async def run_good_agent(spec: AgentSpec, client: RecordingClient, ledger: Ledger,
                         rng: random.Random, until: float, window: int, rate: float,
                         timeout: float) -> None:
    """``window`` lanes, each one call at a time, together about ``rate`` calls/s."""
    interval = window / rate

    async def lane() -> None:
        next_at = time.monotonic() + rng.random() * interval
        while (now := time.monotonic()) < until:
            await asyncio.sleep(max(0.0, next_at - now))
            next_at = max(next_at + interval, time.monotonic())
            request = next_request(spec, ledger, rng)
            ledger.requests.append(request)
            try:
                await client.call(request, timeout)
            except TimeoutError:
                pass  # unanswered so far: "lost" unless an answer comes in by the end
            except ConnectionError:
                return  # the connection is gone: its unanswered calls count as lost

    await asyncio.gather(*(lane() for _ in range(window)))


async def poison_burst(client: RecordingClient, ledger: Ledger, count: int,
                       timeout: float) -> None:
    """The bad agent's storm: ``count`` pipelined calls whose hook spins."""
    requests = []
    for _ in range(count):
        n = ledger.unique()
        requests.append(Request(BAD_AGENT, client.door, "echo", {"spin": True, "n": n}, ""))
    ledger.requests.extend(requests)
    await asyncio.gather(*(client.call(r, timeout) for r in requests),
                         return_exceptions=True)
