"""The bundled plugins' shortcuts decide exactly as the full checks they skip.

Each shortcut (a literal scan before RE2, a digit count before pii's patterns, schema
checks compiled from common keywords) rules out work only where the full check could
find nothing; these compare the two on many generated inputs."""

from __future__ import annotations

import importlib.util
import random
from pathlib import Path
from types import ModuleType
from typing import Any

import jsonschema
import pytest

PLUGINS = Path(__file__).resolve().parent.parent.parent / "plugins"


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"bundled_{name}", PLUGINS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def texts(pieces: list[str], count: int = 3000, seed: int = 16) -> list[str]:
    """Random texts glued from pieces that come near (and sometimes make) a match."""
    rng = random.Random(seed)
    return ["".join(rng.choice(pieces) for _ in range(rng.randint(1, 12)))
            for _ in range(count)]


SCHEMAS: list[Any] = [
    {},
    {"type": "object", "properties": {"text": {"type": "string"}},
     "additionalProperties": True},
    {"type": "object", "required": ["a"], "properties": {"a": {"type": "integer"}},
     "additionalProperties": False},
    {"type": ["object", "null"], "properties": {"n": {"type": "number"},
                                                "b": {"type": "boolean"},
                                                "l": {"type": "array",
                                                      "items": {"type": "string"}}}},
    {"$schema": "http://json-schema.org/draft-07/schema#", "type": "object",
     "properties": {"a": {"type": "integer", "description": "whole", "format": "int32"}}},
    {"type": "object", "properties": {"o": {"type": "object", "required": ["x"],
                                            "properties": {"x": {"type": "null"}}}}},
]
INSTANCES: list[Any] = [
    {}, None, [], "s", 1, 1.0, 1.5, True, {"a": 1}, {"a": 1.0}, {"a": True}, {"a": "1"},
    {"a": 1, "b": 2}, {"text": "hi"}, {"text": 3}, {"n": 2.5}, {"n": False}, {"b": 0},
    {"l": ["x", "y"]}, {"l": ["x", 2]}, {"l": "x"}, {"o": {"x": None}}, {"o": {}},
    {"o": {"x": 0}}, {"o": 3}, {"a": None},
]


@pytest.mark.parametrize("schema", SCHEMAS)
def test_a_compiled_schema_check_accepts_exactly_what_jsonschema_accepts(schema):
    check = load("schema").compile_check(schema)
    assert check is not None
    validator = jsonschema.validators.validator_for(schema)(schema)
    for instance in INSTANCES:
        assert check(instance) == validator.is_valid(instance), (schema, instance)


@pytest.mark.parametrize("schema", [
    {"type": "string", "pattern": "^a"}, {"properties": {"a": {"enum": [1]}}},
    {"$ref": "#/$defs/x", "$defs": {"x": {}}}, {"type": "integer", "minimum": 1},
    {"additionalProperties": {"type": "string"}}, {"items": [{"type": "string"}]},
    {"$schema": "http://json-schema.org/draft-04/schema#", "type": "integer"},
    {"properties": {"a": {"$schema": "http://json-schema.org/draft-07/schema#"}}},
    {"type": "decimal"},
])
def test_a_schema_with_other_keywords_is_left_to_jsonschema(schema):
    assert load("schema").compile_check(schema) is None


def test_the_secrets_hints_never_rule_out_a_text_the_patterns_match():
    secrets = load("secrets")
    plugin = secrets.Secrets(secrets.SecretsConfig())
    assert plugin.hinted
    pieces = ["AKIA", "ASIA", "ABCDEFGHIJKLMNOP", "ghp_", "gho_", "a" * 36, "xoxb-",
              "1234567890", "sk-", "proj-", "-----BEGIN RSA PRIVATE KEY-----", "eyJ",
              "hbGciOiJ", ".", "Bearer ", "BEARER ", "bearer\t", "tok/en+" * 4, " ", "é",
              "sk", "-", "_", "=", "\n", "AKIAABCDEFGHIJKLMNOP", "ghp_" + "x" * 36,
              "xoxb-1234567890", "sk-" + "k" * 20, "eyJhbGciOiJI.eyJzdWIiOiIx.abcdefghij",
              "Bearer abcdefghijklmnopqrstuvwxyz"]
    for text in texts(pieces):
        assert plugin.may_carry(text) or not plugin.find(text), text
        assert plugin.carries(text.encode()) or not plugin.find(text), text


def test_secrets_with_a_pattern_of_its_own_scans_every_text():
    secrets = load("secrets")
    plugin = secrets.Secrets(secrets.SecretsConfig(patterns=["corp_[0-9]{4}"]))
    assert not plugin.hinted and plugin.may_carry("id corp_1234")


def test_the_injection_hints_never_rule_out_a_text_the_markers_match():
    injection = load("injection")
    pieces = ["ignore", "IGNORE", "Ignore", " ", "  ", "all ", "the ", "previous ",
              "instructions", "prompts", "disregard", "DisRegard", "system", "above",
              "you", "YOU", "are", "now", "a", "an", "in", "new", "instructions:", ":",
              "system prompt", "<|im_start|>", "<|system|>", "[INST]", "[/inst]",
              "\u017fystem", "\U000e0041", "\u200b", "word", "\n", "é",
              "you are now a ", "You  are\tnow in", "new instructions :", "System Prompt:",
              "ignore the prior messages", "disregard all system", "[/INST]"]
    for text in texts(pieces):
        full = [m.group().strip() for m in injection.MARKERS.finditer(text)]
        if injection.HIDDEN.search(text):
            full.append("hidden unicode characters")
        assert injection.markers(text) == full, text


def test_pii_redacts_exactly_as_its_patterns_would_without_the_digit_count():
    pii = load("pii")

    def unfiltered(text: str, kinds: set[str]) -> tuple[str, int]:
        data, found = b"  " + text.encode() + b"  ", 0
        for kind, pattern, label, keep in (("card", pii.CARD, b"[card]", pii._is_card),
                                           ("email", pii.EMAIL, b"[email]", None),
                                           ("phone", pii.PHONE, b"[phone]", None)):
            if kind in kinds:
                data, n = pii._replace(pattern, data, label, keep)
                found += n
        return (data[2:-2].decode() if found else text), found

    pieces = ["4111", "1111", " ", "-", "+1 ", "415", "555", "2671", "(20)", "7946",
              "0958", "a@b.io", "x.y@ex.com", "@", "12", "123", "order ", "id", ".",
              "4111111111111111", "é", "+4420794609", "12-345-678", "+12345678",
              "(12) 345 6789", "4111 1111 1111 1", "1234567890123"]
    for kinds in ({"email", "phone", "card"}, {"phone"}, {"email"}, {"card"}):
        for text in texts(pieces, 1500):
            assert pii.redact(text, kinds) == unfiltered(text, kinds), (text, kinds)
