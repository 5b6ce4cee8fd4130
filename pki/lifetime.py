"""When a certificate is renewed: one rule for the node's own certificate, the
orchestrator's, and the status an operator reads.

Certificates are back-dated by ``CLOCK_SKEW`` so that a peer whose clock lags still
accepts one issued a moment ago; their life counts from the moment of issue. A holder
renews at a jittered point around 2/3 of that life (so a fleet issued together does
not renew in step); past 4/5, a renewal that should have happened did not.
"""

from __future__ import annotations

import random

__all__ = ["CLOCK_SKEW", "FRACTION", "JITTER", "OVERDUE", "renewal_point", "renewal_state"]

CLOCK_SKEW = 300.0
FRACTION = 2.0 / 3.0
JITTER = 0.05  # of the life, either side of FRACTION
OVERDUE = 0.8  # of the life


def _issued(not_before: float, not_after: float) -> float:
    return not_before + CLOCK_SKEW if not_after - not_before > CLOCK_SKEW else not_before


def renewal_point(not_before: float, not_after: float, rng: random.Random) -> float:
    """Unix time at which to renew: a jittered point around 2/3 of the life."""
    issued = _issued(not_before, not_after)
    return issued + (not_after - issued) * rng.uniform(FRACTION - JITTER, FRACTION + JITTER)


def renewal_state(not_before: float, not_after: float, now: float) -> str:
    """ok, due (past 2/3 of its life), overdue (past 4/5: renewal is failing), expired."""
    if now >= not_after:
        return "expired"
    issued = _issued(not_before, not_after)
    used = (now - issued) / max(1.0, not_after - issued)
    if used >= OVERDUE:
        return "overdue"
    if used >= FRACTION - JITTER:
        return "due"
    return "ok"
