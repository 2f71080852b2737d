"""The AI and agent gateways in the chaos run: their config sections, the recovery
probe after the chaos, and their part of the summary and the checks.

Their requests are judged apart from the tool calls: a provider or peer that is killed
makes some of them fail by design, so the bar is not the tool calls' ok %, but that
every failure is one README and DESIGN.md document, none is silent (a stream ends with
its terminal event or an error event), every success is correct and audited exactly
once, every request has a record of its fate, and both work again after the chaos.
"""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

from benchmarks.chaos_harness import checks
from benchmarks.chaos_harness.http_agents import PEER, A2aAgent, LlmAgent
from benchmarks.chaos_harness.ledger import Ledger, Request
from benchmarks.chaos_harness.services import LLM_KEY_ENV, OutsideServer

RECOVERY_TIMEOUT = 20.0  # after the chaos, each LLM/A2A agent must succeed again by then
CALL_TIMEOUT = 10.0  # [llm] and [a2a] request_timeout: a stuck request answers by then
ATTEMPT_TIMEOUT = 3.0  # a provider's or peer's answer head (a killed one refuses at once)


def sections(servers: dict[str, OutsideServer]) -> dict[str, dict[str, Any]]:
    """The config: the fake provider and the peer, reachable by the harness's role."""
    return {
        "llm": {"request_timeout": CALL_TIMEOUT},
        "llm.providers.fake": {"kind": "openai", "base_url": servers["llm"].url,
                               "api_key_env": LLM_KEY_ENV, "models": ["*"],
                               "timeout": ATTEMPT_TIMEOUT, "max_retries": 2},
        "a2a": {"request_timeout": CALL_TIMEOUT, "card_refresh": 1.0},
        f"a2a.peers.{PEER}": {"url": servers["peer"].url, "timeout": ATTEMPT_TIMEOUT},
    }


async def recovered(agents: list[LlmAgent | A2aAgent], ledger: Ledger,
                    rng: random.Random, timeout: float) -> tuple[bool, str]:
    """Each LLM/A2A agent gets a correct answer again (its requests go in the ledger,
    judged like all others)."""
    notes, ok = [], True
    for agent in agents:
        deadline, tries = time.monotonic() + RECOVERY_TIMEOUT, 0
        while True:
            request: Request = agent.next_request(ledger, rng)
            ledger.requests.append(request)
            tries += 1
            await agent.call(request, timeout)
            if request.verdict() == "ok":
                notes.append(f"{agent.name} ok after {tries}")
                break
            if time.monotonic() > deadline:
                ok = False
                notes.append(f"{agent.name} still {request.verdict()} after {tries}")
                break
            await asyncio.sleep(0.5)
    return ok, ", ".join(notes)


def summarize(requests: list[Request], audit: checks.AuditIndex,
              servers: dict[str, OutsideServer], recovery: tuple[bool, str],
              min_ok: float) -> tuple[dict[str, Any], dict[str, bool]]:
    """(the gateways' part of the summary, their checks)."""
    tally = checks.tally(requests, audit)
    unaudited = checks.unaudited_fates(requests, audit)
    odd = checks.undocumented(requests)
    summary = {**tally.as_dict(), "by_door": checks.breakdown(requests, "door"),
               "unaudited_fates": unaudited, "undocumented": dict(odd),
               "restarts": {name: s.restarts for name, s in servers.items()},
               "recovery": recovery[1]}
    found = {
        "LLM/A2A: exactly one answer per request":
            tally.verdicts["lost"] + tally.duplicates == 0,
        "LLM/A2A: every success correct, no stream cut": tally.broken == 0,
        "LLM/A2A: every success audited exactly once":
            tally.audit_missing + tally.audit_twice == 0,
        "LLM/A2A: every request has an audit record of its fate": not unaudited,
        "LLM/A2A: only documented errors": not odd,
        "LLM/A2A: both work again after the chaos": recovery[0],
        f"LLM/A2A: ok >= {min_ok:g}%": tally.ok_percent >= min_ok,
    }
    return summary, found
