"""Keeping one long-lived stream to the orchestrator open (Report, Watch): reopened
after it ends, with capped exponential backoff and jitter, towards the orchestrator
that leads. One loop for every such stream."""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from protos.wire.leader import Endpoints

log = logging.getLogger("capstan.node")

__all__ = ["Backoff", "keep_open"]


@dataclass(frozen=True)
class Backoff:
    """Delay before reconnect attempt ``n`` (0-based): ``initial * factor**n`` capped at
    ``maximum``, then scaled by a random factor in [0.5, 1] so nodes cut off together do
    not come back together."""

    initial: float = 0.5
    maximum: float = 30.0
    factor: float = 2.0

    def delay(self, attempt: int, rng: random.Random) -> float:
        base = min(self.maximum, self.initial * self.factor ** min(attempt, 64))
        return base * rng.uniform(0.5, 1.0)


def keep_open(
    once: Callable[[], str],
    *,
    what: str,
    stop: threading.Event,
    endpoints: Endpoints,
    backoff: Backoff,
    rng: random.Random,
    healthy_after: float,
    now_again: threading.Event | None = None,
    ended: Callable[[str, int], None] = lambda reason, failures: None,
) -> None:
    """Run ``once`` (one stream, until it ends; returns why) until ``stop`` is set.

    Only a stream that lasted ``healthy_after`` seconds counts as a success: the
    orchestrator answers a refused stream with a message or two before closing it, and
    that must not turn into a reconnect loop at the initial delay. ``now_again``, when
    set, reopens at once without a delay (a renewed certificate). ``ended`` is told
    each end and the failures counted so far.
    """
    failures = 0
    while not stop.is_set():
        started = time.monotonic()
        try:
            reason = once()
        except Exception as exc:  # a bug here must not end the stream for good
            log.exception("%s stream failed unexpectedly", what)
            reason = f"failed: {exc}"
        if stop.is_set():
            break
        if now_again is not None and now_again.is_set():
            now_again.clear()
            failures = 0
            continue
        if time.monotonic() - started >= healthy_after:
            failures = 0
            endpoints.settled()
        if endpoints.take_move():
            failures = 0  # another orchestrator (the leader, or the next one)
        delay = backoff.delay(failures, rng)
        failures += 1
        ended(reason, failures)
        log.warning(
            "%s stream %s; reconnecting in %.1fs to %s", what, reason, delay, endpoints.current()
        )
        stop.wait(delay)
