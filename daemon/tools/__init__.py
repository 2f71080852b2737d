"""Tools: the registry and built-ins a gateway worker runs, and the upstream worker that
runs one upstream MCP server over stdio."""
