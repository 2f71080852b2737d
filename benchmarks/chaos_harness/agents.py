"""The agents: well-behaved ones on every front door and in both MCP eras, each keeping a
window of calls in flight, and one bad agent whose calls spin a plugin hook.  On the
HTTP front door (benchmarks/chaos_harness/http_agents.py): MCP agents in both eras, and
LLM and A2A agents, streamed and not, at a lower rate (their servers are slower).

Every call's arguments are unique in the run, so its audit record can be found by their
digest, and its answer checked exactly: ``echo`` must return the arguments, the
upstream's ``notes__add`` their sum.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

import orjson

from benchmarks.chaos_harness.http_agents import A2aAgent, HttpAgent, LlmAgent, McpHttpAgent
from benchmarks.chaos_harness.ledger import Ledger, RecordingClient, Request
from benchmarks.chaos_harness.target import CLI, ENV, DaemonUnderTest

DOORS = ("tcp", "zmq", "bridge", "http")  # the bridge: `workingagents mcp-bridge` on stdio
GATEWAYS = ("llm", "a2a")  # the AI and agent gateways, on the HTTP front door
GATEWAY_RATE_SHARE = 0.25  # of --rate, for an LLM or A2A agent
BAD_AGENT = "mallory"
UPSTREAM_SHARE = 0.25  # of the good agents' calls go to the upstream MCP server


@dataclass(frozen=True)
class AgentSpec:
    name: str
    door: str
    stateless: bool
    stream: bool = False  # an LLM or A2A agent that asks for streams

    @property
    def token(self) -> str:
        return f"chaos-token-{self.name}"

    @property
    def token_sha256(self) -> str:
        return hashlib.sha256(self.token.encode()).hexdigest()


def good_agents(gateways: bool = True) -> list[AgentSpec]:
    agents = [AgentSpec(f"{door}-{'stateless' if stateless else 'handshake'}", door,
                        stateless) for door in DOORS for stateless in (False, True)]
    if gateways:
        agents += [AgentSpec(f"{kind}-{'stream' if stream else 'plain'}", kind, True, stream)
                   for kind in GATEWAYS for stream in (False, True)]
    return agents


def bad_agent() -> AgentSpec:
    return AgentSpec(BAD_AGENT, "tcp", False)


Client = RecordingClient | HttpAgent


async def connect(spec: AgentSpec, target: DaemonUnderTest) -> Client:
    listen = target.listen()
    client: RecordingClient
    if spec.door in ("http", *GATEWAYS):
        base = f"http://{listen['http']}"
        agent: HttpAgent
        if spec.door == "http":
            agent = McpHttpAgent(base, spec.token, spec.stateless)
        elif spec.door == "llm":
            agent = LlmAgent(base, spec.token, spec.name, spec.stream)
        else:
            agent = A2aAgent(base, spec.token, spec.name, spec.stream)
        await agent.start()
        return agent
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


def request_maker(spec: AgentSpec, client: Client, ledger: Ledger,
                  rng: random.Random) -> Callable[[], Request]:
    if isinstance(client, LlmAgent | A2aAgent):
        agent = client
        return lambda: agent.next_request(ledger, rng)
    return lambda: next_request(spec, ledger, rng)


async def run_good_agent(spec: AgentSpec, client: Client, ledger: Ledger,
                         rng: random.Random, until: float, window: int, rate: float,
                         timeout: float) -> None:
    """``window`` lanes, each one call at a time, together about ``rate`` calls/s."""
    if spec.door in GATEWAYS:
        window, rate = max(1, window // 2), rate * GATEWAY_RATE_SHARE
    interval = window / rate
    make = request_maker(spec, client, ledger, rng)

    async def lane() -> None:
        next_at = time.monotonic() + rng.random() * interval
        while (now := time.monotonic()) < until:
            await asyncio.sleep(max(0.0, next_at - now))
            next_at = max(next_at + interval, time.monotonic())
            request = make()
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
