"""What runs inside every worker process: the runtime, the owner of its background
loops, and the calls in flight."""
