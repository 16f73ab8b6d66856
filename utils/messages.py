"""One-line notices on stderr. A `warning:` is printed, not only logged: a library that silently
recomputes or falls back (a damaged cache, an untrusted kernel) must say so where a user looks."""
import logging
import sys


def quiet_logger(name: str) -> logging.Logger:
    """A library module's logger. Its NullHandler keeps Python's last-resort handler from printing
    a record that `warn` has already printed; records still reach configured handlers (and tests)."""
    logger = logging.getLogger(name)
    if not any(isinstance(h, logging.NullHandler) for h in logger.handlers):
        logger.addHandler(logging.NullHandler())
    return logger


def warn(text: str, logger: logging.Logger | None = None) -> None:
    print(f"warning: {text}", file=sys.stderr, flush=True)
    if logger is not None:
        logger.warning(text)


def note(text: str) -> None:
    print(f"note: {text}", file=sys.stderr, flush=True)
