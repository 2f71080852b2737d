"""The `workingagents` command line (click).  Thin: it calls the master or control/."""

from __future__ import annotations

import sys

import click

from daemon import __version__
from daemon.cli.agent_commands import call, mcp_bridge, tools
from daemon.cli.agents_admin import agents
from daemon.cli.audit_commands import audit
from daemon.cli.bench_commands import bench
from daemon.cli.daemon_commands import reload, restart, serve, status, stop
from daemon.cli.plugin_commands import plugins


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="workingagents")
def cli() -> None:
    """WorkingAgents: a governance gateway for AI agents (tool calls, model calls, A2A)."""


for command in (serve, status, reload, restart, stop, tools, call, mcp_bridge, plugins,
                agents, audit, bench):
    cli.add_command(command)


def main() -> None:
    sys.exit(cli.main(prog_name="workingagents", standalone_mode=True))
