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

LLM requests (AI gateway) are Cedar requests too: action ``Action::"llm/request"``,
resource ``Model::"gpt-4o"``, and the request's fields in ``context.args`` (all but the
prompt itself: messages, system and input are left out), e.g.

    forbid(principal, action == Action::"llm/request", resource)
      when { context.args has max_tokens && context.args.max_tokens > 4000 };

The policy files hot-reload: at most once a second the plugin checks them, and a changed
set is parsed once (cedarpy.PolicySet) and swapped in; a set that does not parse is
refused with a log line and the previous one keeps deciding.  Cedar numbers are integers:
a fractional argument reaches a policy as a string.  Without policy files the plugin
allows everything (it is off).  Once any policy exists, Cedar denies what no ``permit``
allows: a set without a single ``permit`` is loaded with a warning, since it denies every
call, the admin's included.  A denial names the policy that decided it: its file, line
and ``@id("...")`` if it has one, or that no permit matched.
"""

from __future__ import annotations

import glob
import hashlib
import json
import re
from typing import Any, ClassVar

import cedarpy

from daemon.plugin import Deny, Plugin, PluginConfig

RELOAD_CHECK_S = 1.0
# where a policy starts: its first annotation, or its effect (comments are blanked first)
_POLICY_START = re.compile(r"(?m)^\s*(?:@|permit\s*\(|forbid\s*\()")
_COMMENT = re.compile(r"//[^\n]*")


def describe_policies(files: list[tuple[str, str]]) -> list[str]:
    """For each policy of the concatenated files, in Cedar's order (policy0, policy1,
    ...): "forbid @id("x") at FILE:LINE", for a denial to name."""
    out = []
    for path, text in files:
        found = json.loads(cedarpy.policies_to_json_str(text))["staticPolicies"]
        policies = [found[f"policy{i}"] for i in range(len(found))]
        blanked = _COMMENT.sub("", text)
        starts, at = [], 0
        while (m := _POLICY_START.search(blanked, at)) is not None:
            first = m.start() + len(m.group()) - len(m.group().lstrip())
            starts.append(blanked.count("\n", 0, first) + 1)
            end = blanked.find(";", m.end())  # the policy ends at its ';'
            if end < 0:
                break
            at = end + 1
        for i, policy in enumerate(policies):
            where = f"{path}:{starts[i]}" if len(starts) == len(policies) else path
            name = policy.get("annotations", {}).get("id")
            label = f'{policy["effect"]} @id("{name}")' if name else policy["effect"]
            out.append(f"{label} at {where}")
    return out


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
    kinds: ClassVar[frozenset[str]] = frozenset({"tool", "llm"})

    def __init__(self, config: Any = None, log: Any = None) -> None:
        super().__init__(config, log)
        self.policies: cedarpy.PolicySet | None = None
        self.described: list[str] = []  # policyN -> where it is, for denials
        self.digest = ""
        self.checked = 0.0
        # parsed once per (agent, roles): re-marshalling them per call cost half the time
        self.entities: dict[tuple[str, tuple[str, ...]], cedarpy.Entities] = {}
        self.reload(force=True)
        if not self.config.policies:
            # no policy files named (not even a glob that may match later): allow all,
            # with no hook to run
            self.kinds = frozenset()

    def files(self) -> list[str]:
        return sorted(f for pattern in self.config.policies
                      for f in glob.glob(pattern))

    def reload(self, force: bool = False) -> None:
        now = self.clock()
        if not force and now - self.checked < RELOAD_CHECK_S:
            return
        self.checked = now
        files = []
        for path in self.files():
            with open(path) as f:
                files.append((path, f.read()))
        texts = [text for _path, text in files]
        digest = hashlib.sha256("\0".join(texts).encode()).hexdigest()
        if digest == self.digest:
            return
        if not texts:
            self.policies, self.digest = None, digest
            return
        try:
            policies = cedarpy.PolicySet.from_str("\n".join(texts))
            described = describe_policies(files)
        except ValueError as exc:
            if force and self.policies is None and not self.digest:
                raise  # the first load: refuse this plugin version outright
            self.log.error("Cedar policies refused, the previous set stays: %s", exc)
            self.digest = digest  # do not re-parse the same broken text every second
            return
        self.policies, self.described, self.digest = policies, described, digest
        self.log.info("Cedar policy set loaded from %d files (%s): %d policies", len(texts),
                      digest[:12], len(described))
        if not any(d.startswith("permit") for d in described):
            self.log.warning("the Cedar policies in %s hold no permit: Cedar denies what no "
                             "permit allows, so every call is denied, the admin's included",
                             ", ".join(path for path, _text in files))

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

    def before_call(self, call: Any) -> Deny | None:
        self.reload()
        if self.policies is None:
            return None
        if call.kind == "llm":
            fields = {k: v for k, v in call.arguments.items()
                      if k not in ("messages", "system", "input")}
            action, resource = 'Action::"llm/request"', f'Model::"{call.tool}"'
        else:
            fields = call.arguments
            action, resource = 'Action::"tools/call"', f'Tool::"{call.tool}"'
        request = {"principal": f'Agent::"{call.agent}"', "action": action,
                   "resource": resource,
                   "context": {"args": cedar_value(fields), "roles": list(call.roles)}}
        result = cedarpy.is_authorized(request, self.policies,
                                       self._entities(call.agent, tuple(call.roles)))
        if result.allowed:
            return None
        what = "use model" if call.kind == "llm" else "call"
        return Deny(f"Cedar policy does not allow {call.agent} to {what} {call.tool} with "
                    f"these arguments ({self._why(result.diagnostics.reasons)})", "policy")

    def _why(self, reasons: list[str]) -> str:
        if not reasons:
            return "no permit matched; Cedar denies by default"
        named = []
        for reason in reasons:
            index = int(reason[6:]) if reason.startswith("policy") and \
                reason[6:].isdigit() else -1
            named.append(self.described[index] if 0 <= index < len(self.described)
                         else reason)
        return "; ".join(named)
