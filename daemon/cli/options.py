"""Options and error handling shared by every command."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import click

from daemon import agents_dir, config
from daemon.control.client import ControlClient, ControlError, NotRunning

F = TypeVar("F", bound=Callable[..., Any])


def config_option(func: F) -> F:
    return click.option(
        "--config", "config_path", metavar="PATH", default=None,
        help="Config file (default: $WORKINGAGENTS_CONFIG, then "
             "/etc/workingagents/workingagents.toml if it exists, else built-in defaults).",
    )(func)


def one_line_errors(func: F) -> F:
    """Known failures become one clear line on stderr and exit status 1."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except (config.ConfigError, agents_dir.AgentsDirError, NotRunning, ControlError) as exc:
            raise click.ClickException(str(exc)) from None

    return wrapper  # type: ignore[return-value]


def control_client(config_path: str | None) -> ControlClient:
    try:
        return ControlClient(config.locate_state_dir(config_path))
    except NotRunning as exc:
        if config_path:
            raise
        # A daemon started with `serve --config X` keeps its control file elsewhere.
        source = config.config_path(None)
        origin = f"{source} puts" if source else "the built-in defaults put"
        raise NotRunning(f"{exc}; looked where {origin} it: for a daemon started with "
                         "`serve --config PATH`, pass --config PATH or set "
                         "$WORKINGAGENTS_CONFIG") from None
