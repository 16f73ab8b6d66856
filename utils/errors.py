"""The one exception type that scripts turn into a one-line message and a non-zero exit."""


class UserError(Exception):
    """Bad input or a failed run that the user can act on (never a bug in this code)."""
