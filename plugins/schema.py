"""schema: validates a call's arguments against the tool's input JSON schema before the
tool runs; a mismatch denies the call with what is wrong, so the model can fix it.

    [plugins.config.schema]
    skip = ["echo"]       # tools not to check

jsonschema decides.  Most tool schemas use a handful of keywords (type, properties,
required, additionalProperties, items); those are compiled once per schema into plain
checks that say "valid" in well under a microsecond, where jsonschema takes a few.  A
schema with any other keyword, and every argument those checks find wrong, goes to
jsonschema, which alone words the denial.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jsonschema

from daemon.plugin import Deny, Plugin, PluginConfig

Check = Callable[[Any], bool]
# keywords that never make an instance invalid (format: jsonschema asserts it only with a
# format checker, which this plugin does not give it)
_ANNOTATIONS = frozenset({"title", "description", "default", "examples", "$comment",
                          "deprecated", "readOnly", "writeOnly", "format"})
# the drafts in which "integer" also takes 1.0 (draft 4 does not)
_DRAFTS = frozenset({"https://json-schema.org/draft/2020-12/schema",
                     "https://json-schema.org/draft/2019-09/schema",
                     "http://json-schema.org/draft-07/schema#",
                     "http://json-schema.org/draft-06/schema#"})


def _is_integer(v: Any) -> bool:
    return (isinstance(v, int) and not isinstance(v, bool)) or \
        (isinstance(v, float) and v.is_integer())


_TYPES: dict[str, Check] = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "integer": _is_integer,
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
}


def compile_check(schema: Any, root: bool = True) -> Check | None:
    """A function that is True only for instances ``schema`` accepts, or None when the
    schema uses anything outside the keywords above (jsonschema alone checks it)."""
    if schema is True or schema == {}:
        return _anything
    if not isinstance(schema, dict):
        return None
    checks: list[Check] = []
    for key, value in schema.items():
        if key in _ANNOTATIONS or (root and key == "$schema" and value in _DRAFTS):
            continue
        if key == "type":
            names = [value] if isinstance(value, str) else value
            if not isinstance(names, list) or not names or \
                    not all(isinstance(n, str) and n in _TYPES for n in names):
                return None
            tests = tuple(_TYPES[n] for n in names)
            checks.append(tests[0] if len(tests) == 1 else
                          lambda v, tests=tests: any(t(v) for t in tests))
        elif key == "properties":
            if not isinstance(value, dict):
                return None
            props = []
            for name, sub in value.items():
                inner = compile_check(sub, False)
                if inner is None:
                    return None
                if inner is not _anything:
                    props.append((name, inner))
            checks.append(_properties(tuple(props)))
        elif key == "required":
            if not isinstance(value, list) or not all(isinstance(n, str) for n in value):
                return None
            checks.append(_required(tuple(value)))
        elif key == "additionalProperties":
            if value is False:
                known = frozenset(schema.get("properties") or ())
                checks.append(lambda v, known=known: not isinstance(v, dict)
                              or known.issuperset(v))
            elif value is not True and value != {}:
                return None
        elif key == "items":
            inner = compile_check(value, False)
            if inner is None or isinstance(value, list):
                return None
            if inner is not _anything:
                checks.append(lambda v, inner=inner: not isinstance(v, list)
                              or all(inner(item) for item in v))
        else:
            return None
    if not checks:
        return _anything
    if len(checks) == 1:
        return checks[0]
    return _every(tuple(checks))


def _anything(_value: Any) -> bool:
    return True


def _every(checks: tuple[Check, ...]) -> Check:
    def check(v: Any) -> bool:
        for each in checks:  # noqa: SIM110 - not all(<generator>): it runs on every call
            if not each(v):
                return False
        return True
    return check


def _properties(props: tuple[tuple[str, Check], ...]) -> Check:
    def check(v: Any) -> bool:
        if not isinstance(v, dict):
            return True
        # a loop: all(<generator>) cost a µs per call
        for name, inner in props:  # noqa: SIM110
            if name in v and not inner(v[name]):
                return False
        return True
    return check


def _required(names: tuple[str, ...]) -> Check:
    def check(v: Any) -> bool:
        if not isinstance(v, dict):
            return True
        for name in names:  # noqa: SIM110 - not all(<generator>): it runs on every call
            if name not in v:
                return False
        return True
    return check


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
        # compiled once per schema object (a tool's schema is the same dict on every
        # call): (schema, jsonschema's validator, the quick check or None)
        self.validators: dict[int, tuple[Any, Any, Check | None]] = {}
        self.skip = frozenset(self.config.skip)

    def before_call(self, call: Any) -> Deny | None:
        schema = call.input_schema
        if not schema or call.tool in self.skip:
            return None
        cached = self.validators.get(id(schema))
        if cached is None or cached[0] is not schema:
            cls = jsonschema.validators.validator_for(schema)
            if len(self.validators) > 4096:  # tools come and go with their upstreams
                self.validators.clear()
            cached = self.validators[id(schema)] = (schema, cls(schema),
                                                    compile_check(schema))
        quick = cached[2]
        if quick is not None and quick(call.arguments):
            return None
        validator = cached[1]
        if validator.is_valid(call.arguments):
            return None
        error = jsonschema.exceptions.best_match(validator.iter_errors(call.arguments))
        if error is None:
            return None
        where = "/".join(str(p) for p in error.absolute_path) or "(arguments)"
        return Deny(f"arguments do not match {call.tool}'s input schema at {where}: "
                    f"{error.message}", "guardrail")

    def self_test(self) -> None:
        check = compile_check({"type": "object", "required": ["a"],
                               "properties": {"a": {"type": "integer"}},
                               "additionalProperties": False})
        assert check is not None and check({"a": 1}) and check({"a": 2.0})
        assert not check({"a": True}) and not check({}) and not check({"a": 1, "b": 2})
        assert compile_check({"type": "string", "pattern": "x"}) is None
