"""Failure detection on a timer of its own.

The reconciler evaluates liveness at the start of each tick, but a tick can be long
(it awaits node calls one after the other, each with its own deadline), and a node
that died must be declared dead ``grace`` seconds after its last heartbeat, not when
the tick happens to end. This watch re-evaluates every node's lease a few times per
heartbeat interval, independently of reports arriving (a dead node sends none), and
wakes the reconciler as soon as a verdict changes so the workloads of a dead node
are placed elsewhere on the very next tick.

Heartbeats themselves never touch the store (the gateway only updates the in-memory
Tracker): a store write happens only when a node's state changes.
"""

from __future__ import annotations

import asyncio
import logging
import time

from orchestrator.reconciler import Reconciler

log = logging.getLogger("capstan.orchestrator")

__all__ = ["LivenessWatch"]

# The event loop running this much later than asked means the orchestrator was not
# listening: that time is not counted as any node's silence (Tracker.deaf). A report
# read a fraction of a second late changes nothing against the margin a live node
# has (grace - heartbeat: 2 s by default), and counting such lags would only delay
# every verdict; each longer lag counts whole, not only stalls over 0.5 s as before
# (false positives at 500 and 1,000 nodes during a large apply). Real time
# (monotonic), never the injected clock: a test's clock jumping is not a stall.
LAG = 0.25
# Every node silent at once is taken for the orchestrator's own deafness for at most
# this many grace periods: past that, the silence is real (every node down at once is
# declared dead this much later than one node alone).
QUIET_MAX = 2


class LivenessWatch:
    def __init__(self, reconciler: Reconciler, *, period: float | None = None) -> None:
        self._reconciler = reconciler
        # A quarter of a heartbeat (at most 0.1 s) between looks, and a look when the
        # next lease runs out: a verdict comes when it is due, not up to a period
        # later. An evaluation is a dictionary walk, not I/O.
        self.period = period if period is not None else min(0.1, reconciler.tracker.heartbeat / 4)

    async def check(self) -> dict[str, tuple[str, str]]:
        """Evaluate every lease once; return the nodes whose state changed (old, new)."""
        state = self._reconciler.state
        # Looked at without the state lock (held by applies and placements' writes):
        # the lock is taken only when there is a verdict to write.
        found = self._reconciler.liveness_changes()
        if not found:
            return {}
        # Looks, not copies: this runs ten times a second over every node.
        before = {n.name: n.state for n in state.peek_nodes()}
        dead = [name for name, live in found if live == "dead"]
        await self._reconciler.declare_dead(dead)  # audited now, written under the lock
        try:
            async with state.lock:
                await self._reconciler.update_liveness(frozenset(dead))
        finally:
            self._reconciler.declared_written(dead)  # also when cancelled waiting
        changed = {
            n.name: (before.get(n.name, ""), n.state)
            for n in state.peek_nodes()
            if before.get(n.name) != n.state
        }
        if changed:
            self._reconciler.wake()
        return changed

    def delay(self) -> float:
        """Seconds until the next look: the period, or sooner when a lease runs out."""
        due = self._reconciler.next_verdict_at() - self._reconciler.tracker.now()
        # Never a busy loop: at least a few milliseconds, whatever a lease says.
        return max(0.005, min(self.period, due + 0.001))

    async def run(self) -> None:
        delay = self.period
        tracker = self._reconciler.tracker
        while True:
            asked = time.monotonic()
            await asyncio.sleep(delay)
            waited = time.monotonic() - asked
            late = waited - delay
            deaf = late if late > LAG else 0.0  # the loop was busy: reports sat unread
            quiet = tracker.quiet()
            if 0 < quiet <= QUIET_MAX * tracker.grace:
                # Nobody heard at all: this whole wait (as much of it as was quiet).
                deaf = max(deaf, min(waited, quiet))
            if deaf:
                tracker.stalled(deaf)
                if deaf > 1.0:
                    log.warning("orchestrator deaf %.2f s: not counted as nodes' silence", deaf)
            try:
                await self.check()
                delay = self.delay()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("liveness check failed")
                delay = self.period
