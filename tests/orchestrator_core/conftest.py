"""Fixtures for the orchestrator core: a fake clock, the store implementations, and
``async def`` tests run on a fresh event loop each (no asyncio plugin needed)."""

from __future__ import annotations

import asyncio
import inspect
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from orchestrator.store.etcd import EtcdStore
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


def _sqlite(request: pytest.FixtureRequest, tmp_path: Path, clock: FakeClock) -> StoreHarness:
    path = tmp_path / "capstan.db"
    return StoreHarness("sqlite", clock, lambda: SqliteStore(path, clock=clock))


def _etcd(request: pytest.FixtureRequest, tmp_path: Path, clock: FakeClock) -> StoreHarness:
    endpoints: str = request.getfixturevalue("etcd_endpoints")
    namespace = test_namespace()
    return StoreHarness(
        "etcd",
        clock,
        lambda: EtcdStore(endpoints, namespace=namespace, clock=clock),
        exclusive=False,
        clock_leases=False,
    )


def test_namespace() -> str:
    """A key namespace of its own for one test: parallel runs share one etcd."""
    return f"/test-{uuid.uuid4().hex}"


test_namespace.__test__ = False  # type: ignore[attr-defined]

# Every implementation of orchestrator.store.Store.
STORE_IMPLEMENTATIONS: dict[
    str, Callable[[pytest.FixtureRequest, Path, FakeClock], StoreHarness]
] = {"sqlite": _sqlite, "etcd": _etcd}


@pytest.fixture(params=sorted(STORE_IMPLEMENTATIONS))
def harness(request: pytest.FixtureRequest, tmp_path: Path) -> StoreHarness:
    return STORE_IMPLEMENTATIONS[request.param](request, tmp_path, FakeClock())


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()
