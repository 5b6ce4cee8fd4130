"""Fixtures for the orchestrator core: a fake clock, the store implementations, and
``async def`` tests run on a fresh event loop each (no asyncio plugin needed)."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from pathlib import Path

import pytest

from orchestrator.store import Store
from orchestrator.store.sqlite import SqliteStore

from ._harness import FakeClock, StoreHarness

ASYNC_TEST_TIMEOUT = 60.0


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    """Run ``async def`` tests with asyncio.run; a hang fails after ASYNC_TEST_TIMEOUT."""
    if not inspect.iscoroutinefunction(pyfuncitem.obj):
        return None
    names = pyfuncitem._fixtureinfo.argnames
    kwargs = {name: pyfuncitem.funcargs[name] for name in names}
    asyncio.run(asyncio.wait_for(pyfuncitem.obj(**kwargs), ASYNC_TEST_TIMEOUT))
    return True


def _sqlite(tmp_path: Path, clock: FakeClock) -> Callable[[], Store]:
    path = tmp_path / "capstan.db"
    return lambda: SqliteStore(path, clock=clock)


# Every implementation of orchestrator.store.Store; the etcd store joins this table.
STORE_IMPLEMENTATIONS: dict[str, Callable[[Path, FakeClock], Callable[[], Store]]] = {
    "sqlite": _sqlite,
}


@pytest.fixture(params=sorted(STORE_IMPLEMENTATIONS))
def harness(request: pytest.FixtureRequest, tmp_path: Path) -> StoreHarness:
    clock = FakeClock()
    kind: str = request.param
    return StoreHarness(kind, clock, STORE_IMPLEMENTATIONS[kind](tmp_path, clock))


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()
