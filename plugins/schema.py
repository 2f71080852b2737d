"""schema: validates a call's arguments against the tool's input JSON schema before the
tool runs; a mismatch denies the call with what is wrong, so the model can fix it.

    [plugins.config.schema]
    skip = ["echo"]       # tools not to check
"""

from __future__ import annotations

from typing import Any

import jsonschema

from daemon.plugin import Deny, Plugin, PluginConfig


class SchemaConfig(PluginConfig):
    skip: list[str] = []  # tools not to check


class Schema(Plugin):
    name = "schema"
    version = 1
    priority = 30
    config_schema = SchemaConfig
    config: SchemaConfig

    def __init__(self, config: Any = None, log: Any = None) -> None:
        super().__init__(config, log)
        # compiled once per schema object (a tool's schema is the same dict on every call)
        self.validators: dict[int, tuple[Any, Any]] = {}

    async def before_call(self, call: Any) -> Deny | None:
        schema = call.input_schema
        if not schema or call.tool in self.config.skip:
            return None
        cached = self.validators.get(id(schema))
        if cached is None or cached[0] is not schema:
            cls = jsonschema.validators.validator_for(schema)
            cached = self.validators[id(schema)] = (schema, cls(schema))
        validator = cached[1]
        if validator.is_valid(call.arguments):
            return None
        error = jsonschema.exceptions.best_match(validator.iter_errors(call.arguments))
        if error is None:
            return None
        where = "/".join(str(p) for p in error.absolute_path) or "(arguments)"
        return Deny(f"arguments do not match {call.tool}'s input schema at {where}: "
                    f"{error.message}", "guardrail")
