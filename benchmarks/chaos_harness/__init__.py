"""The chaos harness behind ``benchmarks/chaos.py``: a daemon under test, agents that
record every request and response, faults at random moments, and the checks at the end."""
