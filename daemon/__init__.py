"""WorkingAgents: a governance gateway for AI agents' tool calls, model calls and
agent-to-agent messages, supervised like OTP."""

__version__ = "0.1.0"
