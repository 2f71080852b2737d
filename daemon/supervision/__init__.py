"""The supervision tree: child specs, supervisors, worker processes, liveness, sd_notify."""
