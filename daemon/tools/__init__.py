"""Built-in tools and upstream MCP servers, each run as a supervised worker."""
