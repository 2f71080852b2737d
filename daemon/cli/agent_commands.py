"""tools, call: use the gateway the way an agent does.

They present $WORKINGAGENTS_TOKEN when set (acting as that agent), else the local admin
token from the state dir, and connect to the TCP shim the running daemon listens on.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import click
import orjson

from daemon import config
from daemon.cli.options import config_option, one_line_errors
from daemon.client import AgentClient
from daemon.control.client import NotRunning, read_control_file
from daemon.front.auth import admin_token_path
from daemon.protocol.jsonrpc import RpcError


def _caller(config_path: str | None) -> tuple[dict[str, Any], str]:
    """The daemon's agent listeners, and the token to present."""
    state_dir = config.locate_state_dir(config_path)
    listen = read_control_file(state_dir).get("listen") or {}
    token = os.environ.get("WORKINGAGENTS_TOKEN")
    if not token:
        try:
            token = admin_token_path(state_dir).read_text().strip()
        except OSError as exc:
            raise NotRunning(f"cannot read the admin token: {exc.strerror} "
                             f"({admin_token_path(state_dir)}); set WORKINGAGENTS_TOKEN") \
                from None
    return listen, token


def _agent(config_path: str | None) -> AgentClient:
    listen, token = _caller(config_path)
    try:
        if listen.get("tcp"):
            host, _, port = str(listen["tcp"]).rpartition(":")
            return AgentClient.tcp(host, int(port), token)
        if listen.get("zmq"):
            return AgentClient.zmq(str(listen["zmq"]), token)
    except RpcError as exc:
        raise click.ClickException(f"{exc.code} {exc.message}") from None
    except OSError as exc:
        raise NotRunning(f"cannot reach the gateway: {exc}") from None
    raise NotRunning("the daemon has no agent listener enabled ([listen] tcp and zmq are off)")


@click.command()
@config_option
@click.option("--json", "as_json", is_flag=True, help="Print the tool definitions as JSON.")
@one_line_errors
def tools(config_path: str | None, as_json: bool) -> None:
    """List the tools the caller may see."""
    with _agent(config_path) as agent:
        listed = agent.list_tools()
    if as_json:
        click.echo(orjson.dumps(listed, option=orjson.OPT_INDENT_2).decode())
        return
    width = max((len(t["name"]) for t in listed), default=4)
    for tool in listed:
        click.echo(f"{tool['name']:<{width}}  {tool.get('description', '')}")


@click.command()
@config_option
@click.argument("tool")
@click.option("--json", "arguments", default="{}", metavar="ARGS",
              help="The tool's arguments as a JSON object.")
@click.option("--raw", is_flag=True, help="Print the whole MCP result as JSON.")
@one_line_errors
def call(config_path: str | None, tool: str, arguments: str, raw: bool) -> None:
    """Make one tool call; prints the result's text (exit 1 if the tool failed)."""
    try:
        args: Any = orjson.loads(arguments)
    except orjson.JSONDecodeError as exc:
        raise click.UsageError(f"--json is not valid JSON: {exc}") from None
    if not isinstance(args, dict):
        raise click.UsageError("--json must be a JSON object")
    with _agent(config_path) as agent:
        try:
            result = agent.call_tool(tool, args)
        except RpcError as exc:
            raise click.ClickException(f"{exc.code} {exc.message}") from None
    if raw:
        click.echo(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
    else:
        text = "\n".join(c.get("text", "") for c in result.get("content", [])
                         if c.get("type") == "text")
        click.echo(text, err=bool(result.get("isError")))
    if result.get("isError"):
        sys.exit(1)


@click.command("mcp-bridge")
@config_option
@click.option("--reconnect-deadline", type=click.FloatRange(min=0), default=30.0,
              show_default=True, metavar="SECONDS",
              help="While the daemon is away, requests wait this long for it to come back.")
@one_line_errors
def mcp_bridge(config_path: str | None, reconnect_deadline: float) -> None:
    """A stdio MCP server that forwards to the daemon (for IDEs and MCP clients); it
    reconnects by itself when the daemon restarts."""
    import uvloop

    from daemon import logs
    from daemon.mcp_bridge import bridge

    logs.configure("warning", "mcp-bridge")

    def locate() -> tuple[str, int, str]:
        """Read anew at each connection: a restarted daemon may have a new port and token."""
        try:
            listen, token = _caller(config_path)
        except NotRunning as exc:
            raise ConnectionRefusedError(str(exc)) from None
        if not listen.get("tcp"):
            raise ConnectionRefusedError("mcp-bridge needs the daemon's TCP shim ([listen] tcp)")
        host, _, port = str(listen["tcp"]).rpartition(":")
        return host, int(port), token

    try:
        sys.exit(uvloop.run(bridge(locate, reconnect_deadline)))
    except OSError as exc:
        raise NotRunning(f"cannot reach the gateway: {exc}") from None
