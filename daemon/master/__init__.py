"""The master process: the arbiter (signals, the tick, start and stop), reconfiguration,
the state dir, the supervision tree built from the settings, and the directory of
upstream MCP servers."""
