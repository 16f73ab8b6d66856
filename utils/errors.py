"""The exception types that scripts turn into a one-line message and an exit status."""


class UserError(Exception):
    """Bad input or a failed run that the user can act on (never a bug in this code)."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C with a message saying what was kept (the training loop knows; run_main does not)."""
