"""Benchmarks behind `workingagents bench`: real daemons on ipc://, stopped when done."""
