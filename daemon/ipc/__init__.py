"""Between our own processes: every message kind (messages), the master-worker bus, the
ZeroMQ socket driver, CurveZMQ keys, and the call slot (shared memory)."""
