"""WorkingAgents: a governance gateway for AI agent tool calls, supervised like OTP."""

__version__ = "0.1.0"
