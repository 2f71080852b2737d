"""permissions: "agent X may call tool Y with arguments matching Z", written in Cedar.

    [plugins.config.permissions]
    policies = ["/etc/workingagents/policies/*.cedar"]   # files (globs) of Cedar policies

Each call is one Cedar request: principal ``Agent::"alice"`` (a member of each of its
``Role::"..."``), action ``Action::"tools/call"``, resource ``Tool::"files__read"``, and the
call's arguments in ``context.args`` (plus ``context.roles``).  Cedar denies by default and
a ``forbid`` beats any ``permit``.  Example:

    permit(principal in Role::"analyst", action == Action::"tools/call",
           resource == Tool::"files__read")
      when { context.args has path && context.args.path like "/srv/reports/*" };
    forbid(principal, action, resource == Tool::"mail__send")
      when { context.args has to && !(context.args.to like "*@example.com") };

The policy files hot-reload: at most once a second the plugin checks them, and a changed
set is parsed once (cedarpy.PolicySet) and swapped in; a set that does not parse is
refused with a log line and the previous one keeps deciding.  Cedar numbers are integers:
a fractional argument reaches a policy as a string.  Without policy files the plugin
allows everything (it is off).
"""

from __future__ import annotations

import glob
import hashlib
import json
from typing import Any

import cedarpy

from daemon.plugin import Deny, Plugin, PluginConfig

RELOAD_CHECK_S = 1.0


def cedar_value(value: Any) -> Any:
    """JSON -> what a Cedar context can hold (records, sets, strings, Longs, booleans)."""
    if isinstance(value, bool) or value is None:
        return bool(value)
    if isinstance(value, float):
        return int(value) if value.is_integer() else str(value)
    if isinstance(value, dict):
        return {str(k): cedar_value(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [cedar_value(v) for v in value]
    return value


class PermissionsConfig(PluginConfig):
    policies: list[str] = []  # files (globs) of Cedar policies


class Permissions(Plugin):
    name = "permissions"
    version = 1
    priority = 5
    config_schema = PermissionsConfig
    config: PermissionsConfig

    def __init__(self, config: Any = None, log: Any = None) -> None:
        super().__init__(config, log)
        self.policies: cedarpy.PolicySet | None = None
        self.digest = ""
        self.checked = 0.0
        # parsed once per (agent, roles): re-marshalling them per call cost half the time
        self.entities: dict[tuple[str, tuple[str, ...]], cedarpy.Entities] = {}
        self.reload(force=True)

    def files(self) -> list[str]:
        return sorted(f for pattern in self.config.policies
                      for f in glob.glob(pattern))

    def reload(self, force: bool = False) -> None:
        now = self.clock()
        if not force and now - self.checked < RELOAD_CHECK_S:
            return
        self.checked = now
        texts = []
        for path in self.files():
            with open(path) as f:
                texts.append(f.read())
        digest = hashlib.sha256("\0".join(texts).encode()).hexdigest()
        if digest == self.digest:
            return
        if not texts:
            self.policies, self.digest = None, digest
            return
        try:
            policies = cedarpy.PolicySet.from_str("\n".join(texts))
        except ValueError as exc:
            if force and self.policies is None and not self.digest:
                raise  # the first load: refuse this plugin version outright
            self.log.error("Cedar policies refused, the previous set stays: %s", exc)
            self.digest = digest  # do not re-parse the same broken text every second
            return
        self.policies, self.digest = policies, digest
        self.log.info("Cedar policy set loaded from %d files (%s)", len(texts), digest[:12])

    def _entities(self, agent: str, roles: tuple[str, ...]) -> cedarpy.Entities:
        key = (agent, roles)
        found = self.entities.get(key)
        if found is None:
            graph = [{"uid": {"type": "Agent", "id": agent}, "attrs": {},
                      "parents": [{"type": "Role", "id": r} for r in roles]},
                     *({"uid": {"type": "Role", "id": r}, "attrs": {}, "parents": []}
                       for r in roles)]
            found = self.entities[key] = cedarpy.Entities.from_json_str(json.dumps(graph))
        return found

    async def before_call(self, call: Any) -> Deny | None:
        self.reload()
        if self.policies is None:
            return None
        request = {"principal": f'Agent::"{call.agent}"', "action": 'Action::"tools/call"',
                   "resource": f'Tool::"{call.tool}"',
                   "context": {"args": cedar_value(call.arguments), "roles": list(call.roles)}}
        result = cedarpy.is_authorized(request, self.policies,
                                       self._entities(call.agent, tuple(call.roles)))
        if result.allowed:
            return None
        reasons = ", ".join(result.diagnostics.reasons) or "no permit matched"
        return Deny(f"Cedar policy does not allow {call.agent} to call {call.tool} with "
                    f"these arguments ({reasons})", "policy")
