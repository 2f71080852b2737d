"""The one error a control command raises: its message goes back to the caller."""


class CommandError(Exception):
    """A request that cannot be carried out; its message goes back to the caller."""
