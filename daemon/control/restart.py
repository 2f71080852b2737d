"""restart NAME: replace one worker, or every worker of a supervisor one at a time.

Each replacement is started and proven READY before the incarnation it replaces is
drained, so a restart never leaves a gap.  Requests on different subtrees run at once;
two on the same subtree queue on its lock (no "busy" answer).

request args: {"name": "gateway-0"}
result: {"name": ..., "kind": "worker" | "supervisor", "pids": [...]}
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from daemon.supervision.child import StartFailed

if TYPE_CHECKING:
    from daemon.master import Master

NAME = "restart"


async def execute(master: Master, args: dict[str, Any]) -> dict[str, Any]:
    from daemon.control import CommandError
    from daemon.supervision.supervisor import Supervisor

    name = args.get("name")
    if not isinstance(name, str) or not name:
        raise CommandError("restart needs the name of a child (see `workingagents status`)")
    if name == master.root.id:
        target: Supervisor = master.root
        try:
            await target.replace()
        except StartFailed as exc:
            raise CommandError(f"restart of {name} failed, old worker kept: {exc}") from None
    else:
        found = master.root.find(name)
        if found is None:
            raise CommandError(f"no child named {name!r} (see `workingagents status`)")
        owner, child = found
        try:
            await owner.restart_child(child)
        except StartFailed as exc:
            raise CommandError(f"restart of {name} failed, old worker kept: {exc}") from None
        if not isinstance(child, Supervisor):
            snap = child.snapshot()
            return {"name": name, "kind": "worker", "pids": [snap["pid"]]}
        target = child
    return {"name": name, "kind": "supervisor",
            "pids": [w.snapshot()["pid"] for w in target.workers()]}
