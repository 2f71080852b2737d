"""Unit tests: one piece of the gateway with its real dependencies, in milliseconds."""
