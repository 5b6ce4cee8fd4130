"""The background threads of one long-lived node component, started and ended together.

The puller and the reporter each run a few daemon threads (a stream, a converge or
usage loop) that end when the component stops; both start them once and join them
all within one deadline.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class Workers:
    """Named daemon threads started together once and joined within one deadline."""

    def __init__(self, owner: str) -> None:
        self._owner = owner
        self._threads: list[threading.Thread] = []

    def start(self, *targets: tuple[Callable[[], None], str]) -> None:
        """Start one daemon thread per ``(function, thread name)``; only once."""
        if self._threads:
            raise RuntimeError(f"{self._owner} already started")
        for target, name in targets:
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def join(self, timeout: float) -> None:
        """Wait for every thread to end, ``timeout`` seconds in all."""
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def alive(self) -> list[str]:
        """The names of the threads still running."""
        return [thread.name for thread in self._threads if thread.is_alive()]
