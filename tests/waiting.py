"""Waiting in tests: for an event (poll a condition, fail naming what did not happen)
or on a clock a test moves itself. The timeout is a bound, never a delay: a test waits
exactly as long as the event takes."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

__all__ = ["FakeClock", "wait_for"]


def wait_for(
    cond: Callable[[], object],
    timeout: float = 20.0,
    what: str = "condition",
    *,
    interval: float = 0.02,
) -> None:
    """Poll ``cond`` until truthy; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


class FakeClock:
    """Unix seconds that move only when a test says so (inject it as ``clock``/``now``)."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
