"""Control-endpoint commands, one module each: the wire message and what it does.

Each module has NAME, a docstring naming its request args and result, and
``async def execute(master, args) -> result``; commands.py maps names to them.  The CLI
side lives in daemon/cli/.
"""
