"""Leader election and fencing, on every store implementation."""

from __future__ import annotations

import asyncio

import pytest

from orchestrator.errors import Conflict, NotLeader
from orchestrator.leader import EPOCH_COUNTER, FencedStore, Leadership, current_leader
from orchestrator.store import Compare, Put, Store, keys

from ._harness import StoreHarness


class Monotonic:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def contender(
    store: Store, name: str, harness: StoreHarness, mono: Monotonic | None = None
) -> Leadership:
    return Leadership(
        store,
        identity=f"spiffe://td/orchestrator/{name}",
        address=f"127.0.0.1:{7000 + int(name[-1])}",
        ttl=2.0,
        clock=harness.clock,
        monotonic=mono or Monotonic(),
    )


async def keys_of(store: Store) -> list[tuple[str, bytes]]:
    return [(e.key, e.value) for e in await store.range("/") if e.key != keys.LEADER]


async def test_each_leadership_gets_a_greater_epoch(harness: StoreHarness) -> None:
    async with harness.opened() as store:
        one, two = contender(store, "o1", harness), contender(store, "o2", harness)
        e1 = await one.campaign()
        leader = await current_leader(store)
        assert leader is not None and (leader.identity, leader.epoch) == (one.identity, e1)
        await one.resign()
        e2 = await two.campaign()
        await two.resign()
        e3 = await one.campaign()
        assert e1 < e2 < e3
        assert (await store.get(EPOCH_COUNTER)).value == str(e3).encode()  # type: ignore[union-attr]
        await one.resign()


async def test_only_one_leads_until_it_resigns(harness: StoreHarness) -> None:
    async with harness.opened() as store:
        one, two = contender(store, "o1", harness), contender(store, "o2", harness)
        e1 = await one.campaign()
        waiting = asyncio.create_task(two.campaign())
        done, _ = await asyncio.wait({waiting}, timeout=0.5)
        assert not done, "a second orchestrator was elected while the first held its lease"
        await one.resign()
        e2 = await asyncio.wait_for(waiting, 10)
        assert e2 > e1 and two.leading and not one.leading
        await two.resign()


async def test_a_deposed_leader_writes_nothing(harness: StoreHarness) -> None:
    async with harness.opened() as store:
        frozen = Monotonic()  # the old leader is paused: its own clock says it still leads
        old = contender(store, "o1", harness, frozen)
        await old.campaign()
        fenced_old = FencedStore(store, old)
        rev = await fenced_old.put("/apps/a", b"v1")
        # Its lease ends while it is paused (revoked here, as an expiry would).
        await store.revoke(old._lease.id)  # type: ignore[union-attr]
        new = contender(store, "o2", harness)
        await new.campaign()
        before = await keys_of(store)
        assert old.leading, "the paused leader does not know yet"
        with pytest.raises(NotLeader):
            await fenced_old.put("/apps/a", b"stale", expect_revision=rev)
        assert not old.leading, "a failed fence ends leadership at once"
        with pytest.raises(NotLeader):
            await fenced_old.txn([], [Put("/workloads/w1", b"x")])
        with pytest.raises(NotLeader):
            await fenced_old.delete("/apps/a")
        with pytest.raises(NotLeader):
            await fenced_old.delete_prefix("/apps/")
        assert await keys_of(store) == before
        fenced_new = FencedStore(store, new)
        await fenced_new.put("/apps/a", b"v2", expect_revision=rev)
        await new.resign()


async def test_fenced_writes_keep_compare_and_swap(harness: StoreHarness) -> None:
    async with harness.opened() as store:
        leader = contender(store, "o1", harness)
        await leader.campaign()
        fenced = FencedStore(store, leader)
        rev = await fenced.put("/k", b"1", expect_revision=0)
        with pytest.raises(Conflict) as exc:
            await fenced.put("/k", b"2", expect_revision=0)
        assert exc.value.actual == rev
        assert await fenced.delete("/missing") is None
        result = await fenced.txn([Compare.value("/k", "==", b"other")], [Put("/k", b"3")], [])
        assert not result.succeeded and result.responses == ()
        assert await fenced.delete("/k", expect_revision=rev)
        assert leader.leading
        await leader.resign()


async def test_a_leader_cut_off_from_the_store_fails_closed(harness: StoreHarness) -> None:
    async with harness.opened() as store:
        mono = Monotonic()
        leader = contender(store, "o1", harness, mono)
        epoch = await leader.campaign()
        assert leader.current_epoch() == epoch
        mono.now += leader.ttl * 0.8  # no keepalive answered for most of the lease
        with pytest.raises(NotLeader):
            leader.current_epoch()
        with pytest.raises(NotLeader):
            await FencedStore(store, leader).put("/k", b"v")
        assert await keys_of(store) == [(EPOCH_COUNTER, str(epoch).encode())]


async def test_a_silent_leaders_lease_runs_out_and_another_takes_over(
    harness: StoreHarness,
) -> None:
    async with harness.opened() as store:
        one, two = contender(store, "o1", harness), contender(store, "o2", harness)
        e1 = await one.campaign()  # and never keeps its lease alive
        harness.clock.advance(3)  # SQLite's leases follow the injected clock; etcd's its own
        e2 = await asyncio.wait_for(two.campaign(), 15)
        assert e2 > e1
        with pytest.raises(NotLeader):
            await FencedStore(store, one).put("/k", b"late")
        assert await store.get("/k") is None
        await two.resign()


async def test_holding_keeps_leadership_and_returns_when_it_is_lost(
    harness: StoreHarness,
) -> None:
    async with harness.opened() as store:
        leader = Leadership(store, identity="spiffe://td/orchestrator/o1", address="a", ttl=2.0)
        await leader.campaign()
        holding = asyncio.create_task(leader.hold())
        await asyncio.sleep(2.5)  # longer than the lease: only keepalives keep it
        assert leader.leading and not holding.done()
        await store.revoke(leader._lease.id)  # type: ignore[union-attr]
        await asyncio.wait_for(holding, 5)
        assert not leader.leading and leader.lost.is_set()
