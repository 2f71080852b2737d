"""``[llm] max_concurrent_per_agent``: the AI gateway requests one agent may have in
flight, counted in the master where they arrive (before any worker sees them), so that
one agent's thousands of slow streams cannot starve the others of workers, provider
connections and the master's buffers.  Over the cap: 429 with Retry-After."""

from __future__ import annotations

RETRY_AFTER = 1  # seconds: a slot frees as soon as one of the agent's requests ends


class AgentSlots:
    def __init__(self) -> None:
        self.busy: dict[str, int] = {}  # agent -> requests in flight (no zero entries)

    def take(self, agent: str, cap: int) -> bool:
        """One slot for ``agent``, or False when it has ``cap`` (0: no cap) already."""
        held = self.busy.get(agent, 0)
        if cap and held >= cap:
            return False
        self.busy[agent] = held + 1
        return True

    def give(self, agent: str) -> None:
        held = self.busy.get(agent, 0) - 1
        if held > 0:
            self.busy[agent] = held
        else:
            self.busy.pop(agent, None)

    @staticmethod
    def refusal(cap: int) -> str:
        return (f"Too many concurrent requests: this agent already has {cap} AI gateway "
                f"requests in flight ([llm] max_concurrent_per_agent); retry when one ends")
