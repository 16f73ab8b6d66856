"""Waiting on another process in tests: poll a condition until it holds or a deadline passes."""
import time

import pytest


def wait_until(condition, seconds: float = 240, what: str = ""):
    """condition()'s first truthy value; the test fails (not hangs) if none comes within `seconds`."""
    deadline = time.time() + seconds
    while time.time() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}")
