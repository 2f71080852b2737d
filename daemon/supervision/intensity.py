"""Restart intensity (OTP) and exponential restart backoff.

They answer different questions.  Intensity decides when a supervisor gives up and
escalates to its parent.  Backoff spaces restarts so that a crash loop does not spin the
CPU while it is still within the intensity.  A probe delay spaces the half-open retries of
a temporary subtree that gave up (spec.Probe).
"""

from __future__ import annotations

import time
from collections import deque

from daemon.supervision.spec import Intensity, Liveness, Probe


class RestartIntensity:
    """Sliding window of restart times for one supervisor."""

    def __init__(self, limits: Intensity) -> None:
        self.limits = limits
        self._times: deque[float] = deque()

    def record(self, now: float | None = None) -> bool:
        """Note one restart; True while still within the limit."""
        now = time.monotonic() if now is None else now
        self._times.append(now)
        while self._times and now - self._times[0] > self.limits.max_seconds:
            self._times.popleft()
        return len(self._times) <= self.limits.max_restarts

    def recent(self) -> int:
        return len(self._times)

    def window(self) -> float:
        """Seconds spanned by the restarts currently counted."""
        return self._times[-1] - self._times[0] if len(self._times) > 1 else 0.0

    def reset(self) -> None:
        self._times.clear()


class Backoff:
    """Delay before a child's next restart: 0, initial, 2*initial, ... up to max.

    The first restart is immediate (fast recovery from a one-off crash).  The streak is
    forgotten once the child has stayed up for ``backoff_reset`` seconds.
    """

    def __init__(self, liveness: Liveness) -> None:
        self.liveness = liveness
        self.streak = 0

    def next_delay(self, up_for: float) -> float:
        if up_for >= self.liveness.backoff_reset:
            self.streak = 0
        self.streak += 1
        if self.streak == 1:
            return 0.0
        delay = self.liveness.backoff_initial * 2 ** (self.streak - 2)
        return float(min(delay, self.liveness.backoff_max))


class ProbeDelay:
    """Delay before the next probe of a subtree that gave up: initial, 2*initial, ... up
    to max; back to initial once the subtree had stayed up ``reset`` seconds."""

    def __init__(self, probe: Probe) -> None:
        self.probe = probe
        self.streak = 0

    def next_delay(self, up_for: float) -> float:
        if up_for >= self.probe.reset:
            self.streak = 0
        delay = min(self.probe.initial * 2 ** self.streak, self.probe.max)
        self.streak += 1
        return float(delay)
