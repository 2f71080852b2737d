"""agents add NAME --role R... / agents list / agents revoke NAME: who may connect.

`add` mints a token, prints it once, writes its sha256 to agents.d/NAME.toml beside the
config file (daemon.agents_dir) and asks a running daemon to reload; `revoke` deletes
that file and reloads, which also ends the agent's open sessions.  Nobody computes a
sha256 by hand, and no token is ever stored.
"""

from __future__ import annotations

import secrets
import stat
import sys
from pathlib import Path
from typing import Any

import click
import orjson

from daemon import agents_dir, config
from daemon.cli.options import config_option, control_client, one_line_errors
from daemon.control.client import NotRunning
from daemon.front.auth import ADMIN, digest


@click.group()
def agents() -> None:
    """Agents and their tokens (agents.d/NAME.toml beside the config file)."""


def _directory(config_path: str | None) -> Path:
    return agents_dir.location(config.config_path(config_path),
                               config.locate_state_dir(config_path))


def _file_mode(settings: config.Settings) -> int:
    """As readable as the config file beside it, so that the daemon's user (systemd's
    DynamicUser, say) can read what root wrote; never writable by others.  A digest is
    no secret: the token cannot be recovered from it."""
    if settings.source is None:
        return 0o600
    return stat.S_IMODE(settings.source.stat().st_mode) & 0o644 | 0o600


def _apply(config_path: str | None, done: str) -> None:
    try:
        result: dict[str, Any] = control_client(config_path).call("reload", timeout=60)
    except NotRunning:
        click.echo(f"{done}; the daemon is not running: it applies at start", err=True)
        return
    if not result["ok"]:
        raise click.ClickException(f"{done}, but the reload was refused: {result['error']}")
    click.echo(f"{done}; the daemon reloaded", err=True)


@agents.command("add")
@config_option
@click.argument("name")
@click.option("--role", "roles", multiple=True, required=True, metavar="ROLE",
              help="A role from [roles.*] (repeatable).")
@one_line_errors
def add(config_path: str | None, name: str, roles: tuple[str, ...]) -> None:
    """Mint a token for a new agent NAME (printed once) and register its digest."""
    if not agents_dir.NAME.fullmatch(name) or name == ADMIN:
        raise click.ClickException(f"bad agent name {name!r}: letters, digits, - and _ "
                                   f"(at most 64, not {ADMIN!r})")
    settings = config.load(config_path)
    directory = _directory(config_path)
    if name in settings.config.agents:
        source = agents_dir.read(directory).get(name, (None, settings.source))[1]
        raise click.ClickException(f"agent {name} already exists (in {source})")
    unknown = [r for r in roles if r not in settings.config.roles and r != ADMIN]
    if unknown:
        known = ", ".join(sorted(settings.config.roles)) or "none"
        raise click.ClickException(f"unknown role {unknown[0]!r} (known: {known}; "
                                   "define it in [roles.NAME])")
    token = secrets.token_urlsafe(32)
    try:
        path = agents_dir.write(directory, name, digest(token), list(dict.fromkeys(roles)),
                                _file_mode(settings))
    except FileExistsError:
        raise click.ClickException(f"{directory / (name + '.toml')} already exists") \
            from None
    except OSError as exc:
        raise click.ClickException(f"cannot write {directory}: {exc.strerror}") from None
    click.echo(f"agent {name} (roles: {', '.join(roles)}) written to {path}", err=True)
    click.echo("its token follows, shown this once: store it now (only its sha256 is kept)",
               err=True)
    click.echo(token)
    sys.stdout.flush()
    _apply(config_path, f"agent {name} added")


@agents.command("list")
@config_option
@click.option("--json", "as_json", is_flag=True, help="Print the agents as JSON.")
@one_line_errors
def list_agents(config_path: str | None, as_json: bool) -> None:
    """The agents, their roles and the file that defines each."""
    settings = config.load(config_path)
    in_dir = agents_dir.read(_directory(config_path))
    rows = [{"name": name, "roles": list(agent.roles),
             "token": agent.token_sha256.lower()[:12],  # a prefix tells tokens apart
             "curve_public_key": agent.curve_public_key,  # public: shown whole
             "source": str(in_dir[name][1] if name in in_dir else settings.source)}
            for name, agent in sorted(settings.config.agents.items())]
    if as_json:
        click.echo(orjson.dumps(rows, option=orjson.OPT_INDENT_2).decode())
        return
    width = max([len(r["name"]) for r in rows] + [4])
    roles_width = max([len(", ".join(r["roles"])) for r in rows] + [5])
    click.echo(f"{'NAME':<{width}}  {'ROLES':<{roles_width}}  {'SHA256':<13}  SOURCE")
    for r in rows:
        click.echo(f"{r['name']:<{width}}  {', '.join(r['roles']):<{roles_width}}  "
                   f"{_token_column(str(r['token'])):<13}  {r['source']}")


def _token_column(prefix: str) -> str:
    return f"{prefix}…" if prefix else "-"  # "-": an agent with a Curve key only


@agents.command("revoke")
@config_option
@click.argument("name")
@one_line_errors
def revoke(config_path: str | None, name: str) -> None:
    """Delete agent NAME's agents.d file and reload: its token stops working."""
    directory = _directory(config_path)
    found = agents_dir.read(directory).get(name)
    if found is None:
        main = config.config_path(config_path)
        if main is not None and name in config.load(config_path).config.agents:
            raise click.ClickException(f"agent {name} is defined in the main config {main}; "
                                       f"remove its [agents.{name}] table there, then reload")
        raise click.ClickException(f"no agent named {name!r} (see `workingagents agents "
                                   "list`)")
    path = found[1]
    if set(agents_dir.read_file(path).agents) != {name}:
        raise click.ClickException(f"agent {name} shares {path} with other agents; remove "
                                   f"its [agents.{name}] table there, then reload")
    try:
        agents_dir.remove(path)
    except OSError as exc:
        raise click.ClickException(f"cannot delete {path}: {exc.strerror}") from None
    _apply(config_path, f"agent {name} revoked ({path} deleted)")


@agents.command("curve-keypair")
@config_option
@one_line_errors
def curve_keypair(config_path: str | None) -> None:
    """Print a new Curve key pair for an agent of [listen] zmq_curve (nothing is stored)."""
    import zmq

    from daemon.ipc import curve

    public, secret = zmq.curve_keypair()
    click.echo(f'curve_public_key = "{public.decode()}"')
    click.echo(f'secret = "{secret.decode()}"')
    server = curve.public_path(config.locate_state_dir(config_path), curve.SERVER)
    click.echo("register the first line in [agents.NAME] (or agents.d/NAME.toml) and "
               "reload; give the secret to the agent alone; the agent also needs the "
               f"daemon's public key, in {server} (made at the daemon's first start)",
               err=True)
