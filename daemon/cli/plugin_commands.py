"""plugins list / plugins check FILE."""

from __future__ import annotations

from pathlib import Path

import click
import orjson

from daemon.cli.options import config_option, control_client, one_line_errors
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


def render_plugins(state: dict[str, object]) -> str:
    loaded = state.get("loaded") or []
    refused = state.get("refused") or {}
    assert isinstance(loaded, list) and isinstance(refused, dict)
    lines = [f"{'PLUGIN':<20} {'VERSION':>8} {'PRIORITY':>8}  {'HOOKS':<24} FILE"]
    for p in sorted(loaded, key=lambda p: (p["priority"], p["name"])):
        lines.append(f"{p['name']:<20} {p['version']!s:>8} {p['priority']:>8}  "
                     f"{','.join(p['hooks']) or '-':<24} {p['path']}")
    if not loaded:
        lines.append("(no plugins loaded)")
    for path, why in sorted(refused.items()):
        lines.append(f"REFUSED {path}: {why}")
    return "\n".join(lines)


@plugins.command("check")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@one_line_errors
def check(file: Path) -> None:
    """Validate a plugin file offline, with the checks the hot loader makes."""
    try:
        verdict = validate(read_source(file))
    except Refused as exc:
        raise click.ClickException(f"{file}: refused: {exc}") from None
    click.echo(f"{file}: ok: plugin {verdict.name} v{verdict.version}, priority "
               f"{verdict.priority}, hooks {', '.join(verdict.hooks) or 'none'}")
