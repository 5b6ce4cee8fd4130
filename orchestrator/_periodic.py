"""The one loop every background duty of the orchestrator runs in."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger("capstan.orchestrator")


async def every(period: float, step: Callable[[], Awaitable[object]], what: str) -> None:
    """Run ``step`` every ``period`` seconds until cancelled; a failed pass is logged
    and the next one still runs (one bad pass must not stop the duty for good)."""
    while True:
        try:
            await step()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("%s failed", what)
        await asyncio.sleep(period)
