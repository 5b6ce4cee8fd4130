"""Keeping one long-lived stream to the orchestrator open (Report, Watch): reopened
after it ends, with capped exponential backoff and jitter, towards the orchestrator
that leads, each time with the node's own certificate as it is now. One loop and one
connection for every such stream."""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import grpc

from node.renewal import gateway_channel, own_credentials
from pki.errors import CapstanError
from protos.wire.errors import Status, status_of
from protos.wire.leader import Endpoints, endpoints_of, leader_of

log = logging.getLogger("capstan.node")

__all__ = ["Backoff", "GatewayStream", "keep_open"]


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


class GatewayStream:
    """One long-lived stream to the orchestrator (Report, Watch). Each attempt reads
    the node's own pair again (a renewal may have replaced it), opens a channel to the
    orchestrator that leads and hands it to the stream's body; a call that broke
    tells the endpoints where the leader is. ``run`` keeps it open (``keep_open``)."""

    def __init__(
        self,
        what: str,
        *,
        cert: Path,
        key: Path,
        ca: Path,
        gateway_address: str | Endpoints,
        backoff: Backoff,
        rng: random.Random,
        healthy_after: float,
    ) -> None:
        self.what = what
        self._cert, self._key, self._ca = Path(cert), Path(key), Path(ca)
        # Every orchestrator the node knows; a follower's refusal names the leader.
        self.endpoints = endpoints_of(gateway_address)
        self._backoff = backoff
        self._rng = rng
        self._healthy_after = healthy_after

    def run(
        self,
        body: Callable[[str, grpc.Channel], str],
        *,
        stop: threading.Event,
        now_again: threading.Event | None = None,
        ended: Callable[[str, int], None] = lambda reason, failures: None,
        broke: Callable[[Status], None] = lambda status: None,
    ) -> None:
        """Until ``stop``: ``body(address, channel)`` runs one stream and returns why it
        ended; ``broke`` is told the status of a call that failed."""

        def attempt() -> str:
            try:
                # The pair read as one: a renewal may swap it at any moment.
                credentials = own_credentials(self._cert, self._key, self._ca)
            except CapstanError as exc:
                return f"cannot start: {exc}"
            address = self.endpoints.current()
            channel = gateway_channel(address, credentials, self._cert)
            try:
                return body(address, channel)
            except grpc.RpcError as exc:
                self.endpoints.failed(address, leader_of(exc))
                status = status_of(exc)
                broke(status)
                return f"to {address} broke: {status.one_line()}"
            finally:
                channel.close()

        keep_open(
            attempt,
            what=self.what,
            stop=stop,
            endpoints=self.endpoints,
            backoff=self._backoff,
            rng=self._rng,
            healthy_after=self._healthy_after,
            now_again=now_again,
            ended=ended,
        )
