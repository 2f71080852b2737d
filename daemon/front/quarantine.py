"""A circuit breaker per agent: one whose calls keep hanging, crashing or overrunning
gateway workers is refused for a while (-32019), so that one agent can never spend the
gateway supervisor's restart intensity and take everyone down.

A strike is a call of the agent that had to be interrupted in a plugin hook, or that
hung or crashed its worker.  ``strikes`` of them within ``window`` seconds trip the
breaker: the agent is quarantined for ``period`` seconds, doubling each time it trips
again (up to ``max_period``), and forgiven once it has been quiet for ``max_period``.
Runs in the master, which sees every strike (it sends the interrupts and reaps workers).
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from daemon import metrics
from daemon.config import Settings

log = logging.getLogger("gateway")


@dataclass
class _Record:
    strikes: deque[float] = field(default_factory=deque)
    until: float = 0.0
    trips: int = 0
    last_strike: float = 0.0
    reason: str = ""


@dataclass(frozen=True)
class QuarantineLimits:
    strikes: int = 3
    window: float = 60.0
    period: float = 30.0
    max_period: float = 600.0

    @classmethod
    def from_settings(cls, settings: Settings) -> QuarantineLimits:
        g = settings.config.gateway
        return cls(g.quarantine_strikes, g.quarantine_window, g.quarantine_seconds,
                   g.quarantine_max_seconds)


class Quarantine:
    def __init__(self, limits: QuarantineLimits) -> None:
        self.limits = limits
        self._agents: dict[str, _Record] = {}

    def retry_after(self, agent: str, now: float) -> float:
        """Seconds until the agent may call again; 0 when it is not quarantined."""
        record = self._agents.get(agent)
        if record is None or record.until <= now:
            return 0.0
        return record.until - now

    def strike(self, agent: str, why: str, detail: str, now: float) -> float:
        """Count one strike; returns the quarantine period if this one tripped it."""
        limits = self.limits
        metrics.agent_strike(agent, why)
        record = self._agents.setdefault(agent, _Record())
        if record.trips and now - record.last_strike > limits.max_period:
            record.trips = 0  # quiet long enough: a first offence again
        record.last_strike = now
        strikes = record.strikes
        strikes.append(now)
        while strikes and now - strikes[0] > limits.window:
            strikes.popleft()
        log.warning("agent %s: strike %d of %d in %gs: %s", agent, len(strikes),
                    limits.strikes, limits.window, detail)
        if len(strikes) < limits.strikes or record.until > now:
            return 0.0
        period = min(limits.period * float(2 ** record.trips), limits.max_period)
        record.trips += 1
        record.until = now + period
        record.reason = f"{len(strikes)} strikes in {now - strikes[0]:.1f}s, last: {detail}"
        strikes.clear()
        metrics.agent_quarantined(agent, True)
        log.error("agent %s quarantined for %.0fs: its calls answer -32019 (%s)", agent,
                  period, record.reason)
        return period

    def expire(self, now: float) -> None:
        for agent, record in self._agents.items():
            if record.until and record.until <= now:
                record.until = 0.0
                metrics.agent_quarantined(agent, False)
                log.info("agent %s: quarantine over", agent)

    def snapshot(self, now: float) -> list[dict[str, Any]]:
        return [{"agent": agent, "retry_after": round(record.until - now, 1),
                 "trips": record.trips, "reason": record.reason}
                for agent, record in sorted(self._agents.items()) if record.until > now]
