"""What the master holds for agents: listeners (TCP shim, ZeroMQ), authentication, the
switchboard that routes each call to its gateway worker, and the per-agent quarantine."""
