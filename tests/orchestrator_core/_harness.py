"""Test doubles that are not mocks: a clock tests advance, and a handle on one store
implementation that can be opened, closed and reopened on the same data."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

from orchestrator.store import Store
from tests.waiting import FakeClock


@dataclass
class StoreHarness:
    """One store implementation: ``make()`` gives a new, unopened handle on the same
    backing data (same file, same etcd prefix), so tests can close and reopen."""

    kind: str
    clock: FakeClock
    make: Callable[[], Store]
    # Whether this store is the only writer of its revision counter (SQLite): then
    # revisions are adjacent and an empty store is at 0. On a shared etcd other
    # namespaces' writes show as gaps, so the suite asserts increase, not adjacency.
    exclusive: bool = True
    # Whether leases expire on the injected clock (SQLite) or on the server's (etcd).
    clock_leases: bool = True

    def after(self, before: int, now: int, writes: int = 1) -> None:
        """``now`` is the revision ``writes`` commits after ``before``."""
        if self.exclusive:
            assert now == before + writes, f"expected revision {before + writes}, got {now}"
        else:
            assert now >= before + writes, f"expected a revision >= {before + writes}, got {now}"

    @asynccontextmanager
    async def opened(self) -> AsyncIterator[Store]:
        store = self.make()
        await store.open()
        try:
            yield store
        finally:
            await store.close()
