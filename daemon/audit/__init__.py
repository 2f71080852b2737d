"""The tamper-evident audit log: one writer process, a hash chain, signed checkpoints."""
