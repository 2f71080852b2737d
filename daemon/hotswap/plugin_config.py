"""A plugin's [plugins.config.NAME] table -> the value its instance gets as ``self.config``.

A plugin that declares ``config_schema`` gets the table validated against it: an unknown
key or a wrong type refuses the table (at start, at reload, in `plugins check`, and in a
worker asked to take it), so a typo never reaches a hook and fails every call.  A plugin
without a schema gets the table as a dict, as before.
"""

from __future__ import annotations

from typing import Any

import msgspec

from daemon.config import validation_message
from daemon.hotswap.source import Refused
from daemon.plugin import Plugin

GATEWAY_KEYS = ("mode", "budget_ms")  # read by the gateway, allowed in every table


class TableRefused(Refused):
    """The plugin's [plugins.config.NAME] table does not fit its config_schema."""


def plugin_config(cls: type[Plugin], table: dict[str, Any]) -> Any:
    """The table without the gateway's keys, validated when the plugin has a schema;
    raises TableRefused naming the key and what was expected."""
    own = {k: v for k, v in table.items() if k not in GATEWAY_KEYS}
    schema = cls.config_schema
    if schema is None:
        return own
    where = f"plugins.config.{cls.name}"
    # the keys as the table spells them (not structs.fields(): it evaluates every
    # annotation, most of a worker's plugin load)
    known: tuple[str, ...] = schema.__struct_encode_fields__
    for key in own:
        if key not in known:  # refused even when the schema itself would ignore it
            takes = ", ".join([*known, *GATEWAY_KEYS])
            raise TableRefused(f"key {where}.{key}: unknown key; plugin {cls.name} takes "
                               f"{takes}")
    try:
        return msgspec.convert(own, schema)
    except msgspec.ValidationError as exc:
        raise TableRefused(validation_message(str(exc), where)) from None

