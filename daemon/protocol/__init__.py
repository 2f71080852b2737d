"""JSON-RPC 2.0 and the Model Context Protocol of both eras: messages and error codes."""
