"""Wire formats and ZeroMQ plumbing between the master, its workers and the CLI."""
