"""restart NAME: replace one worker, or every worker of a supervisor one at a time.

Each replacement is started and proven READY before the incarnation it replaces is
drained, so a restart never leaves a gap.  Requests on different subtrees run at once;
two on the same subtree queue on its lock (no "busy" answer).

request args: {"name": "gateway-0"}  (or its path: "workingagents/gateway/gateway-0")
result: {"name": ..., "kind": "worker" | "supervisor", "pids": [...]}
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from daemon.control.command_error import CommandError
from daemon.supervision.child import Child, StartFailed
from daemon.supervision.supervisor import Supervisor

if TYPE_CHECKING:
    from daemon.master.arbiter import Master

NAME = "restart"


async def execute(master: Master, args: dict[str, Any]) -> dict[str, Any]:

    name = args.get("name")
    if not isinstance(name, str) or not name:
        raise CommandError("restart needs the name of a child (see `workingagents status`)")
    owner, child = locate(master.root, name)
    try:
        if owner is None:
            await child.replace()
        else:
            await owner.restart_child(child)
    except StartFailed as exc:
        raise CommandError(f"restart of {name} failed, old worker kept: {exc}") from None
    if not isinstance(child, Supervisor):
        return {"name": name, "kind": "worker", "pids": [child.snapshot()["pid"]]}
    return {"name": name, "kind": "supervisor",
            "pids": [w.snapshot()["pid"] for w in child.workers()]}


def locate(root: Supervisor, name: str) -> tuple[Supervisor | None, Child]:
    """(its supervisor, the child) for a plain name ("gateway-1", found anywhere) or a
    path as the log prints it, from the root or below ("workingagents/gateway/gateway-1",
    "gateway/gateway-1"); the root itself has no supervisor."""

    steps = name.strip("/").split("/")
    if steps[0] == root.id:
        steps.pop(0)
        if not steps:
            return None, root
    found = root.find(steps[0]) if len(steps) == 1 else _walk(root, steps)
    if found is None:
        raise CommandError(f"no child named {name!r} (see `workingagents status`)")
    return found


def _walk(owner: Supervisor, steps: list[str]) -> tuple[Supervisor, Child] | None:
    for i, step in enumerate(steps):
        child = next((c for c in owner.children if c.id == step), None)
        if child is None:
            return None
        if i == len(steps) - 1:
            return owner, child
        if not isinstance(child, Supervisor):
            return None
        owner = child
    return None
