"""What runs inside a worker process: the runtime every worker shares."""
