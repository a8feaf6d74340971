"""The one exception type users see: the CLI prints its message on one line, without a traceback."""


class CnnkitError(Exception):
    """A problem with the user's input or environment, explained in the message."""
