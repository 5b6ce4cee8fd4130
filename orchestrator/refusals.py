"""Refused unauthenticated requests: rate-limited and audited in aggregate.

Anyone who reaches the join port can send requests the orchestrator must refuse.
One audit entry per refusal would let them grow the log (and every reader's cost)
without bound, so refusals are counted per source host per window instead:

- the first refusal of a source in a window is audited at once (an operator sees an
  attack start), the rest of that window as one summary entry with their count;
- a source whose refusals outrun its budget (a token bucket refilled at ``rate`` per
  second up to ``burst``) is refused at once, before the request is even parsed or
  the store is read, until the budget refills. Accepted requests cost nothing.

At most ``max_sources`` sources are tracked per window; the rest are counted
together under ``(other)``, so memory is bounded too.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from orchestrator.audit import AuditLog

log = logging.getLogger("capstan.orchestrator")

OTHER = "(other)"


def source_host(peer: str) -> str:
    """The host of a gRPC peer string (``ipv4:1.2.3.4:5``, ``ipv6:[::1]:5``)."""
    _, _, rest = peer.partition(":")
    host = rest.rpartition(":")[0] if rest.count(":") >= 1 else rest
    return (host or peer).strip("[]")[:64]


@dataclass
class _Source:
    tokens: float
    updated: float
    count: int = 0  # refusals this window not yet audited
    reasons: Counter[str] = field(default_factory=Counter)


class RefusalTally:
    """Counts refusals of one kind (``event``) per source; see the module docstring."""

    def __init__(
        self,
        audit: AuditLog,
        *,
        event: str,
        clock: Callable[[], float],
        window: float = 60.0,
        rate: float = 1.0,
        burst: float = 20.0,
        max_sources: int = 1024,
    ) -> None:
        self._audit = audit
        self.event = event
        self._clock = clock
        self.window = window
        self._rate = rate
        self._burst = burst
        self._max = max_sources
        self._sources: dict[str, _Source] = {}
        self._window_start: float | None = None
        self._flusher: asyncio.TimerHandle | None = None
        self.refused_total = 0

    def admit(self, source: str) -> bool:
        """Whether a request from ``source`` may be looked at (its budget is not spent)."""
        s = self._sources.get(source)
        if s is None:
            return True
        self._refill(s)
        return s.tokens >= 1.0

    async def refused(self, source: str, reason: str) -> None:
        """Count one refusal of ``source``; the first of its window is audited now."""
        now = self._clock()
        if self._window_start is None:
            self._window_start = now
            self._schedule()
        key = source if source in self._sources or len(self._sources) < self._max else OTHER
        s = self._sources.get(key)
        first = s is None
        if s is None:
            s = self._sources[key] = _Source(tokens=self._burst, updated=now)
        self._refill(s)
        s.tokens = max(0.0, s.tokens - 1.0)
        self.refused_total += 1
        if first:
            await self._audit.record(self.event, source=key, count=1, reason=reason[:200])
        else:
            s.count += 1
            s.reasons[reason[:80]] += 1

    async def flush(self) -> None:
        """Audit each source's refusals since its last entry as one entry; a new window
        begins (sources still out of budget stay refused until they refill)."""
        start, end = self._window_start, self._clock()
        self._window_start = None
        if self._flusher is not None:
            self._flusher.cancel()
            self._flusher = None
        sources, self._sources = self._sources, {}
        for key, s in sorted(sources.items()):
            if s.count:
                await self._audit.record(
                    self.event,
                    source=key,
                    count=s.count,
                    reasons=dict(s.reasons.most_common(8)),
                    since=start,
                    until=end,
                )
            if s.tokens < self._burst:  # keep an exhausted budget across the window
                self._sources[key] = _Source(tokens=s.tokens, updated=s.updated)

    def _refill(self, s: _Source) -> None:
        now = self._clock()
        s.tokens = min(self._burst, s.tokens + max(0.0, now - s.updated) * self._rate)
        s.updated = now

    def _schedule(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._flusher = loop.call_later(self.window, lambda: loop.create_task(self._flush_logged()))

    async def _flush_logged(self) -> None:
        try:
            await self.flush()
        except Exception:
            log.exception("auditing refused %s requests failed", self.event)
