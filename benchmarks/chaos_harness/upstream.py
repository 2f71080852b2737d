"""The chaos harness's upstream: a real MCP server on the official SDK, over stdio.

One tool, ``add``, whose answer the agents can check (kept apart from the tests'
fixture so that the benchmark does not depend on the test tree).
"""

from __future__ import annotations

from mcp.server.mcpserver import MCPServer

app = MCPServer("notes")


@app.tool()
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


if __name__ == "__main__":
    app.run()
