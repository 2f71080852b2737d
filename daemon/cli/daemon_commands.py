"""serve, status, reload, restart, stop: running and steering the daemon."""

from __future__ import annotations

import sys
import time

import click
import orjson
import psutil

from daemon import config
from daemon.cli.options import config_option, control_client, one_line_errors
from daemon.cli.status_view import render_status
from daemon.control.health import DEGRADED


@click.command()
@config_option
@click.option("--log-format", type=click.Choice(["text", "json"]), default=None,
              help="One line per event on stderr: text (default; journald-aware) or one "
                   "JSON object per line (overrides [daemon] log_format).")
@one_line_errors
def serve(config_path: str | None, log_format: str | None) -> None:
    """Run the daemon in the foreground (systemd style; no self-daemonising)."""
    from daemon.master.arbiter import serve as run_master

    settings = config.load(config_path)
    sys.exit(run_master(settings, config_arg=config_path, log_format=log_format))


@click.command()
@config_option
@click.option("--json", "as_json", is_flag=True, help="Print the raw status as JSON.")
@click.option("--watch", is_flag=True, help="Redraw the tree and the call rates live.")
@click.option("--interval", default=1.0, show_default=True, help="Seconds between redraws.")
@click.option("--count", type=int, default=None, hidden=True, help="Stop after N redraws.")
@one_line_errors
def status(config_path: str | None, as_json: bool, watch: bool, interval: float,
           count: int | None) -> None:
    """Show the live supervision tree.  Exit status: 0 healthy, 1 not running, 3 degraded
    (something is down or refused, but calls are served)."""
    client = control_client(config_path)
    if watch:
        from daemon.cli.status_watch import watch as watch_status

        snapshot, ended = watch_status(lambda: client.call("status", timeout=5),
                                       client.listening.get("metrics"), interval, count)
        if ended:
            click.echo(ended)
    else:
        snapshot = client.call("status", timeout=5)
        if as_json:
            click.echo(orjson.dumps(snapshot, option=orjson.OPT_INDENT_2).decode())
        else:
            click.echo(render_status(snapshot))
    if snapshot and snapshot.get("health") == DEGRADED:
        sys.exit(3)


@click.command()
@config_option
@one_line_errors
def reload(config_path: str | None) -> None:
    """Reload the config now (same as SIGHUP or `systemctl reload workingagents`)."""
    result = control_client(config_path).call("reload", timeout=60)
    if not result["ok"]:
        raise click.ClickException(f"reload refused: {result['error']}")
    click.echo("reloaded: " + ("; ".join(result["changes"]) or "no changes"))


@click.command()
@config_option
@click.argument("name")
@one_line_errors
def restart(config_path: str | None, name: str) -> None:
    """Restart one child (a worker, or every worker of a supervisor in turn)."""
    result = control_client(config_path).call("restart", {"name": name}, timeout=120)
    pids = ", ".join(str(p) for p in result["pids"])
    click.echo(f"restarted {result['kind']} {name}: pid {pids}")


@click.command()
@config_option
@click.option("--timeout", default=60.0, show_default=True, help="Seconds to wait for exit.")
@one_line_errors
def stop(config_path: str | None, timeout: float) -> None:
    """Stop every child in reverse order, then the master."""
    client = control_client(config_path)
    pid = client.call("stop")["pid"]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
            click.echo(f"stopped (pid {pid})")
            return
        time.sleep(0.05)
    raise click.ClickException(f"pid {pid} still running after {timeout:g}s")
