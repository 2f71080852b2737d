"""schema: validates a call's arguments against the tool's input JSON schema before the
tool runs; a mismatch denies the call with what is wrong, so the model can fix it.

    [plugins.config.schema]
    skip = ["echo"]       # tools not to check
"""

from __future__ import annotations

from typing import Any

import jsonschema
import orjson

from daemon.plugin import Deny, Plugin


class Schema(Plugin):
    name = "schema"
    version = 1
    priority = 30

    def __init__(self, config: dict[str, Any] | None = None, log: Any = None) -> None:
        super().__init__(config, log)
        self.validators: dict[bytes, Any] = {}  # compiled once per distinct schema

    async def before_call(self, call: Any) -> Deny | None:
        schema = call.input_schema
        if not schema or call.tool in self.config.get("skip", []):
            return None
        key = orjson.dumps(schema, option=orjson.OPT_SORT_KEYS)
        validator = self.validators.get(key)
        if validator is None:
            cls = jsonschema.validators.validator_for(schema)
            validator = self.validators[key] = cls(schema)
        error = jsonschema.exceptions.best_match(validator.iter_errors(call.arguments))
        if error is None:
            return None
        where = "/".join(str(p) for p in error.absolute_path) or "(arguments)"
        return Deny(f"arguments do not match {call.tool}'s input schema at {where}: "
                    f"{error.message}", "guardrail")
