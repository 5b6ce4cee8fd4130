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

import logging
import time

from orchestrator._periodic import every
from orchestrator.reconciler import Reconciler

log = logging.getLogger("capstan.orchestrator")

__all__ = ["LivenessWatch"]

# A check this much later than its period means the orchestrator was not listening:
# that time is not counted as any node's silence (Tracker.deaf). Real time (monotonic),
# never the injected clock: a test's clock jumping forward is not a stall.
STALL = 0.5


class LivenessWatch:
    def __init__(self, reconciler: Reconciler, *, period: float | None = None) -> None:
        self._reconciler = reconciler
        # A quarter of a heartbeat (at most 0.1 s): the verdict lags the lease by no
        # more than that, and an evaluation is a dictionary walk, not I/O.
        self.period = period if period is not None else min(0.1, reconciler.tracker.heartbeat / 4)

    async def check(self) -> dict[str, tuple[str, str]]:
        """Evaluate every lease once; return the nodes whose state changed (old, new)."""
        state = self._reconciler.state
        # Looks, not copies: this runs ten times a second over every node.
        before = {n.name: n.state for n in state.peek_nodes()}
        async with state.lock:
            await self._reconciler.update_liveness()
        changed = {
            n.name: (before.get(n.name, ""), n.state)
            for n in state.peek_nodes()
            if before.get(n.name) != n.state
        }
        if changed:
            self._reconciler.wake()
        return changed

    async def run(self) -> None:
        last = time.monotonic()

        async def step() -> None:
            nonlocal last
            now = time.monotonic()
            late = now - last - self.period
            last = now
            if late > STALL:
                # This timer ran late: the event loop was stalled, reports sat unread.
                self._reconciler.tracker.stalled(late)
            await self.check()

        await every(self.period, step, "liveness check")
