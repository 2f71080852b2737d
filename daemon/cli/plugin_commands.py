"""plugins list / plugins check FILE."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import orjson

from daemon import config
from daemon.cli.options import config_option, control_client, one_line_errors
from daemon.cli.status_view import refused_lines
from daemon.control import plugin_check
from daemon.control.client import NotRunning
from daemon.hotswap.sandbox import validate
from daemon.hotswap.source import Refused, read_source


@click.group()
def plugins() -> None:
    """Guardrail and policy plugins."""


@plugins.command("list")
@config_option
@click.option("--json", "as_json", is_flag=True)
@one_line_errors
def list_plugins(config_path: str | None, as_json: bool) -> None:
    """The plugins serving now, and files that were refused (with the reason)."""
    state = control_client(config_path).call("status", timeout=5)["plugins"]
    if as_json:
        click.echo(orjson.dumps(state, option=orjson.OPT_INDENT_2).decode())
        return
    click.echo(render_plugins(state))


def render_plugins(state: dict[str, Any]) -> str:
    loaded = state.get("loaded") or []
    lines = [f"{'PLUGIN':<20} {'VERSION':>8} {'PRIORITY':>8}  {'HOOKS':<24} FILE"]
    for p in sorted(loaded, key=lambda p: (p["priority"], p["name"])):
        lines.append(f"{p['name']:<20} {p['version']!s:>8} {p['priority']:>8}  "
                     f"{','.join(p['hooks']) or '-':<24} {p['path']}")
    if not loaded:
        lines.append("(no plugins loaded)")
    lines += refused_lines(state, "REFUSED")
    return "\n".join(lines)


@plugins.command("check")
@config_option
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@one_line_errors
def check(config_path: str | None, file: Path) -> None:
    """Validate a plugin file with the checks the hot loader makes, its table in the
    config included.  With the daemon running it checks there, migrating a copy of the
    live state as a hot upgrade would; otherwise offline, from initial_state."""
    try:
        source = read_source(file)
    except Refused as exc:
        raise click.ClickException(f"{file}: refused: {exc}") from None
    try:
        client = control_client(config_path)
    except NotRunning:
        client = None
    if client is None:
        settings = config.load(config_path)
        try:
            verdict = validate(source, dict(settings.config.plugins.config))
        except Refused as exc:
            raise click.ClickException(f"{file}: refused: {exc}") from None
        click.echo(_ok(file, verdict.name, verdict.version, verdict.priority,
                       verdict.hooks))
        click.echo(f"{file}: checked offline (no daemon running): migrate was not tried "
                   "against live state")
        return
    result = client.call("plugin_check", plugin_check.message(str(file.absolute()),
                                                              source.code), timeout=60)
    if not result["ok"]:
        raise click.ClickException(f"{file}: refused by the running daemon (pid "
                                   f"{client.pid}): {result['error']}")
    name = result["name"]
    click.echo(_ok(file, name, result["version"], result["priority"], result["hooks"]))
    migrated = result.get("migrated_from")
    live = f"migrate from the live v{migrated} state passed" if migrated is not None \
        else f"no version of {name} serves, so it would start from initial_state"
    click.echo(f"{file}: checked by the running daemon (pid {client.pid}): {live}")


def _ok(file: Path, name: str, version: object, priority: object, hooks: list[str]) -> str:
    return (f"{file}: ok: plugin {name} v{version}, priority {priority}, hooks "
            f"{', '.join(hooks) or 'none'}")
