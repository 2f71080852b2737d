"""audit verify [PATH...] / audit tail [-f] [--agent A] [--tool T] [--denied]."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import orjson

from daemon import config
from daemon.audit import chain
from daemon.audit import tail as audit_tail
from daemon.audit.verify import summary, verify
from daemon.cli.options import config_option, one_line_errors


@click.group()
def audit() -> None:
    """The tamper-evident audit log."""


def _audit_dir(config_path: str | None) -> Path:
    return config.load(config_path).audit_dir


@audit.command("verify")
@config_option
@click.argument("paths", nargs=-1, type=click.Path(exists=True, path_type=Path))
@click.option("--checkpoints", "extra", multiple=True, metavar="FILE",
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Also check a shipped copy of the checkpoints (repeatable).")
@click.option("--key", metavar="ed25519:BASE64", default=None,
              help="The public key to trust (default: the one the genesis record names; "
                   "give it when the whole audit dir may have been replaced).")
@one_line_errors
def verify_command(config_path: str | None, paths: tuple[Path, ...], extra: tuple[Path, ...],
                   key: str | None) -> None:
    """Check the hash chain over all files (default: the configured audit dir) and the
    signed checkpoints; exit 1 at the first broken record."""
    report = verify(list(paths) or [_audit_dir(config_path)], list(extra), key)
    for note in report.notes:
        click.echo(f"note: {note}", err=True)
    click.echo(summary(report))
    if not report.ok:
        raise SystemExit(1)


@audit.command("tail")
@config_option
@click.option("-n", "--lines", "count", default=20, show_default=True,
              help="How many records to show first.")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new records.")
@click.option("--agent", default=None, help="Only this agent's records.")
@click.option("--tool", default=None, help="Only this tool's records.")
@click.option("--denied", is_flag=True, help="Only calls a plugin denied (or would deny).")
@click.option("--json", "as_json", is_flag=True, help="The records as stored.")
@click.option("--dir", "directory", type=click.Path(exists=True, file_okay=False,
                                                   path_type=Path), default=None,
              help="The audit dir (default: from the config).")
@one_line_errors
def tail_command(config_path: str | None, count: int, follow: bool, agent: str | None,
                 tool: str | None, denied: bool, as_json: bool, directory: Path | None) -> None:
    """The latest audit records as readable lines."""
    where = directory or _audit_dir(config_path)
    if not where.is_dir() or not chain.log_files(where):
        raise click.ClickException(f"no audit log in {where}")
    keep = audit_tail.Filter(agent, tool, denied)

    def show(record: dict[str, Any]) -> None:
        click.echo(orjson.dumps(record).decode() if as_json else audit_tail.render(record))

    records, position = audit_tail.last_lines(where, count, keep)
    for record in records:
        show(record)
    if follow:
        try:
            for record in audit_tail.follow(where, keep, position):
                show(record)
        except KeyboardInterrupt:
            pass

