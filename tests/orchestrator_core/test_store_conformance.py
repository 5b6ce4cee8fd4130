"""The store contract, run against every implementation in STORE_IMPLEMENTATIONS."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

import pytest

from orchestrator.store import (
    Compacted,
    Compare,
    Conflict,
    Delete,
    Event,
    EventType,
    Get,
    LeaseNotFound,
    Put,
    RangeResult,
    Store,
    StoreClosed,
    StoreError,
)

from ._harness import StoreHarness


async def take(events: AsyncGenerator[Event, None], n: int) -> list[Event]:
    return [await anext(events) for _ in range(n)]


async def snapshot(store: Store) -> tuple[int, list[tuple[str, bytes, int]]]:
    """The whole visible state: revision and every key, to assert that nothing happened.

    On a shared etcd the revision moves with other namespaces' writes, so only the
    keys are compared there (``unchanged``)."""
    entries = await store.range("/")
    return await store.revision(), [(e.key, e.value, e.revision) for e in entries]


async def unchanged(harness: StoreHarness, store: Store, before: tuple[int, list[object]]) -> None:
    after = await snapshot(store)
    if harness.exclusive:
        assert after == before
    else:
        assert after[1] == before[1]


# -- keys and values --------------------------------------------------------------


async def test_is_a_store(harness: StoreHarness) -> None:
    async with harness.opened() as store:
        assert isinstance(store, Store)


async def test_put_get_bump_one_revision_per_write(harness: StoreHarness) -> None:
    async with harness.opened() as store:
        r0 = await store.revision()
        if harness.exclusive:
            assert r0 == 0
        assert await store.get("/a") is None
        r1 = await store.put("/a", b"one")
        r2 = await store.put("/a", b"two")
        r3 = await store.put("/b", b"bee")
        harness.after(r0, r1)
        harness.after(r1, r2)
        harness.after(r2, r3)
        a = await store.get("/a")
        assert a is not None
        assert (a.value, a.revision, a.create_revision, a.version, a.lease) == (
            b"two",
            r2,
            r1,
            2,
            None,
        )
        harness.after(r3, await store.revision(), 0)


async def test_delete(harness: StoreHarness) -> None:
    async with harness.opened() as store:
        r1 = await store.put("/a", b"x")
        assert await store.delete("/missing") is None
        if harness.exclusive:
            assert await store.revision() == r1, "deleting nothing must not bump the revision"
        r2 = await store.delete("/a")
        assert r2 is not None
        harness.after(r1, r2)
        assert await store.get("/a") is None
        r3 = await store.put("/a", b"again")
        entry = await store.get("/a")
        assert entry is not None and (entry.create_revision, entry.version) == (r3, 1)


async def test_range_is_sorted_and_respects_prefix_boundaries(harness: StoreHarness) -> None:
    async with harness.opened() as store:
        for key in ("/apps/b", "/apps/a", "/apps/c/x", "/appsx", "/app", "/nodes/n1"):
            await store.put(key, key.encode())
        last = await store.revision()
        found = await store.range("/apps/")
        assert isinstance(found, RangeResult)
        assert [e.key for e in found] == ["/apps/a", "/apps/b", "/apps/c/x"]
        harness.after(last, found.revision, 0)
        assert len(await store.range("/apps/", limit=2)) == 2
        assert [e.key for e in await store.range("/zzz")] == []


async def test_delete_prefix_is_one_revision(harness: StoreHarness) -> None:
    async with harness.opened() as store:
        for key in ("/t/a", "/t/b", "/t/c", "/tx"):
            last = await store.put(key, b"v")
        events = store.watch("/", start_revision=last + 1)
        assert await store.delete_prefix("/t/") == 3
        rev = await store.revision()
        harness.after(last, rev)
        got = await take(events, 3)
        assert [(e.type, e.key) for e in got] == [
            (EventType.DELETE, "/t/a"),
            (EventType.DELETE, "/t/b"),
            (EventType.DELETE, "/t/c"),
        ]
        assert len({e.revision for e in got}) == 1
        await events.aclose()
        assert [e.key for e in await store.range("/")] == ["/tx"]


@pytest.mark.parametrize(
    "key", ["", "no-slash", "/with space", "/nul\x00", "/tab\t", "/é", "/" + "k" * 1100]
)
async def test_bad_keys_are_refused_and_nothing_is_written(harness: StoreHarness, key: str) -> None:
    async with harness.opened() as store:
        before = await snapshot(store)
        with pytest.raises(StoreError, match="invalid key"):
            await store.put(key, b"v")
        await unchanged(harness, store, before)
        assert before[1] == []


async def test_values_must_be_bytes(harness: StoreHarness) -> None:
    async with harness.opened() as store:
        before = await snapshot(store)
        with pytest.raises(StoreError, match="values are bytes"):
            await store.put("/a", "text")  # type: ignore[arg-type]
        await unchanged(harness, store, before)


# -- compare-and-swap ---------------------------------------------------------------


async def test_put_cas(harness: StoreHarness) -> None:
    async with harness.opened() as store:
        r0 = await store.revision()
        r1 = await store.put("/lock", b"me", expect_revision=0)
        harness.after(r0, r1)
        before = await snapshot(store)
        with pytest.raises(Conflict) as exc:
            await store.put("/lock", b"you", expect_revision=0)
        assert (exc.value.key, exc.value.expected, exc.value.actual) == ("/lock", 0, r1)
        with pytest.raises(Conflict):
            await store.put("/lock", b"you", expect_revision=r1 + 7)
        await unchanged(harness, store, before)
        harness.after(r1, await store.put("/lock", b"you", expect_revision=r1))
        with pytest.raises(Conflict) as exc:
            await store.put("/absent", b"x", expect_revision=1)
        assert exc.value.actual == 0


async def test_delete_cas(harness: StoreHarness) -> None:
    async with harness.opened() as store:
        r1 = await store.put("/a", b"x")
        r2 = await store.put("/a", b"y")
        with pytest.raises(Conflict):
            await store.delete("/a", expect_revision=r1)
        with pytest.raises(Conflict) as exc:
            await store.delete("/missing", expect_revision=1)
        assert exc.value.actual == 0
        assert (await store.get("/a")) is not None
        harness.after(r2, await store.revision(), 0)
        harness.after(r2, await store.delete("/a", expect_revision=r2) or 0)


async def test_concurrent_cas_increments_lose_nothing(harness: StoreHarness) -> None:
    async with harness.opened() as store:
        key = "/counters/n"
        r0 = await store.put(key, b"0")
        conflicts = 0

        async def incrementer() -> None:
            nonlocal conflicts
            for _ in range(200):
                while True:
                    entry = await store.get(key)
                    assert entry is not None
                    try:
                        await store.put(
                            key, str(int(entry.value) + 1).encode(), expect_revision=entry.revision
                        )
                        break
                    except Conflict:
                        conflicts += 1

        await asyncio.gather(incrementer(), incrementer())
        entry = await store.get(key)
        assert entry is not None and entry.value == b"400"
        assert entry.version == 401
        harness.after(r0, await store.revision(), 400)  # failed CAS attempts wrote nothing
        assert conflicts > 0, "the two writers never interleaved: the test proves nothing"


# -- transactions ---------------------------------------------------------------------


async def test_txn_success_branch_is_one_revision(harness: StoreHarness) -> None:
    async with harness.opened() as store:
        r1 = await store.put("/counters/seq", b"0")
        result = await store.txn(
            [Compare.revision("/counters/seq", "==", r1), Compare.absent("/workloads/w1")],
            [
                Put("/workloads/w1", b"spec"),
                Put("/counters/seq", b"1"),
                Get("/workloads/", prefix=True),
            ],
            [Get("/counters/seq")],
        )
        assert result.succeeded
        harness.after(r1, result.revision)
        assert result.responses[0] == result.revision and result.responses[1] == result.revision
        listed = result.responses[2]
        assert isinstance(listed, RangeResult) and [e.key for e in listed] == ["/workloads/w1"]
        w1 = await store.get("/workloads/w1")
        seq = await store.get("/counters/seq")
        assert w1 is not None and seq is not None
        assert w1.revision == seq.revision == result.revision


async def test_txn_failure_branch(harness: StoreHarness) -> None:
    async with harness.opened() as store:
        await store.put("/k", b"old")
        result = await store.txn(
            [Compare.value("/k", "==", b"other")],
            [Put("/k", b"new")],
            [Get("/k"), Put("/failed", b"1")],
        )
        assert not result.succeeded
        current = result.responses[0]
        assert isinstance(current, RangeResult) and current.entries[0].value == b"old"
        assert (await store.get("/failed")) is not None
        assert (await store.get("/k")).value == b"old"  # type: ignore[union-attr]


async def test_txn_only_reads_does_not_bump(harness: StoreHarness) -> None:
    async with harness.opened() as store:
        r1 = await store.put("/k", b"v")
        result = await store.txn([Compare.absent("/k")], [Put("/k", b"w")], [Get("/k")])
        assert not result.succeeded
        harness.after(r1, result.revision, 0)
        harness.after(r1, await store.revision(), 0)


@pytest.mark.parametrize(
    ("compare", "holds"),
    [
        (Compare.absent("/missing"), True),
        (Compare("/missing", "version", "==", 0), True),
        (Compare.value("/missing", "!=", b"x"), False),  # value compares fail on absent keys
        (Compare.value("/k", "==", b"v"), True),
        (Compare.value("/k", "!=", b"v"), False),
        (Compare.revision("/k", ">", 0), True),
        (Compare.revision("/k", "<", 1), False),
        (Compare("/k", "create_revision", ">", 0), True),
        (Compare("/k", "create_revision", "==", 0), False),
        (Compare("/k", "version", "==", 1), True),
        (Compare("/k", "lease", "==", 0), True),
    ],
)
async def test_txn_compare_semantics(harness: StoreHarness, compare: Compare, holds: bool) -> None:
    async with harness.opened() as store:
        await store.put("/k", b"v")
        result = await store.txn([compare], [Get("/k")], [])
        assert result.succeeded is holds


async def test_txn_is_all_or_nothing(harness: StoreHarness) -> None:
    async with harness.opened() as store:
        r1 = await store.put("/counters/seq", b"0")
        before = await snapshot(store)
        with pytest.raises(LeaseNotFound):
            await store.txn(
                [],
                [
                    Put("/workloads/w1", b"spec"),
                    Put("/counters/seq", b"1"),
                    Put("/x", b"", lease=999),
                ],
            )
        await unchanged(harness, store, before)
        events = store.watch("/", start_revision=r1)
        assert [e.key for e in await take(events, 1)] == ["/counters/seq"]
        r2 = await store.put("/after", b"1")
        nxt = await take(events, 1)
        assert (nxt[0].key, nxt[0].revision) == ("/after", r2), "a failed txn left an event"
        await events.aclose()


@pytest.mark.parametrize(
    "ops",
    [
        [Put("/a", b"1"), Put("/a", b"2")],
        [Put("/a/x", b"1"), Delete("/a/", prefix=True)],
        [Delete("/a"), Put("/a", b"1")],
    ],
)
async def test_txn_writing_a_key_twice_is_refused(harness: StoreHarness, ops: list[Put]) -> None:
    async with harness.opened() as store:
        before = await snapshot(store)
        with pytest.raises(StoreError, match="more than once"):
            await store.txn([], ops)
        await unchanged(harness, store, before)


# -- watches --------------------------------------------------------------------------


async def test_watch_replays_history_in_order_and_resumes(harness: StoreHarness) -> None:
    async with harness.opened() as store:
        r1 = await store.put("/w/a", b"1")
        await store.put("/other", b"x")
        r3 = (await store.txn([], [Put("/w/b", b"2"), Put("/w/c", b"3")])).revision
        r4 = await store.delete("/w/a")
        r5 = await store.put("/w/a", b"4")

        events = store.watch("/w/", start_revision=r1)
        got = await take(events, 5)
        await events.aclose()
        assert [(e.type, e.key, e.value, e.revision) for e in got] == [
            (EventType.PUT, "/w/a", b"1", r1),
            (EventType.PUT, "/w/b", b"2", r3),
            (EventType.PUT, "/w/c", b"3", r3),
            (EventType.DELETE, "/w/a", b"", r4),
            (EventType.PUT, "/w/a", b"4", r5),
        ]

        resumed = store.watch("/w/", start_revision=r4 or 0)
        assert [e.revision for e in await take(resumed, 2)] == [r4, r5]
        await resumed.aclose()


async def test_watch_without_start_sees_writes_after_the_call(harness: StoreHarness) -> None:
    async with harness.opened() as store:
        await store.put("/w/old", b"1")
        events = store.watch("/w/")
        r2 = await store.put("/w/new", b"2")  # before the first iteration: still included
        event = await anext(events)
        assert (event.key, event.revision) == ("/w/new", r2)
        pending = asyncio.ensure_future(anext(events))
        await store.put("/w/newer", b"3")
        assert (await pending).key == "/w/newer"
        await events.aclose()


async def test_live_watch_sees_every_write_without_gaps(harness: StoreHarness) -> None:
    async with harness.opened() as store:
        events = store.watch("/live/", start_revision=await store.revision() + 1)

        async def writer() -> None:
            for i in range(100):
                await store.put(f"/live/{i % 7}", str(i).encode())
                if i % 10 == 0:
                    await store.put("/elsewhere", b"noise")

        task = asyncio.create_task(writer())
        got = await take(events, 100)
        await task
        await events.aclose()
        assert [int(e.value) for e in got] == list(range(100))
        revisions = [e.revision for e in got]
        assert revisions == sorted(revisions) and len(set(revisions)) == 100


async def test_many_watchers_each_get_everything(harness: StoreHarness) -> None:
    async with harness.opened() as store:
        start = await store.revision() + 1
        watchers = [store.watch("/m/", start_revision=start) for _ in range(5)]
        for i in range(20):
            await store.put(f"/m/{i}", b"v")
        for w in watchers:
            assert [e.key for e in await take(w, 20)] == [f"/m/{i}" for i in range(20)]
            await w.aclose()


async def test_watch_from_compacted_revision_is_refused(harness: StoreHarness) -> None:
    async with harness.opened() as store:
        revs = [await store.put("/c/k", str(i).encode()) for i in range(10)]
        await store.compact(revs[5])
        with pytest.raises(Compacted) as exc:
            await anext(store.watch("/c/", start_revision=revs[2]))
        # etcd compacts cluster-wide: a parallel run may have compacted further.
        harness.after(revs[5], exc.value.compact_revision, 0)
        kept = store.watch("/c/", start_revision=revs[5])
        assert [e.value for e in await take(kept, 5)] == [b"5", b"6", b"7", b"8", b"9"]
        await kept.aclose()
        # Keys are untouched by compaction.
        assert (await store.get("/c/k")).value == b"9"  # type: ignore[union-attr]


async def test_watch_ends_when_store_closes(harness: StoreHarness) -> None:
    store = harness.make()
    await store.open()
    events = store.watch("/x/")
    pending = asyncio.ensure_future(anext(events))
    await store.revision()  # the watch is waiting by now
    await store.close()
    with pytest.raises(StoreClosed):
        await pending


async def test_closed_store_refuses_operations(harness: StoreHarness) -> None:
    store = harness.make()
    with pytest.raises(StoreClosed):
        await store.get("/a")
    await store.open()
    await store.close()
    with pytest.raises(StoreClosed):
        await store.put("/a", b"x")


# -- leases ---------------------------------------------------------------------------


async def test_lease_expiry_follows_the_injected_clock(harness: StoreHarness) -> None:
    if not harness.clock_leases:
        pytest.skip("leases expire on the etcd cluster's clock: test_etcd_store covers them")
    async with harness.opened() as store:
        lease = await store.grant_lease(10)
        assert lease.expires_at == harness.clock() + 10
        await store.put("/heartbeats/n1", b"alive", lease=lease.id)
        await store.put("/nodes/n1", b"registered")
        events = store.watch("/heartbeats/", start_revision=1)
        assert (await take(events, 1))[0].type is EventType.PUT

        harness.clock.advance(9)
        entry = await store.get("/heartbeats/n1")
        assert entry is not None and entry.lease == lease.id
        await store.keepalive(lease.id)  # now expires at +19
        harness.clock.advance(9)
        assert await store.get("/heartbeats/n1") is not None

        harness.clock.advance(1.5)
        assert await store.get("/heartbeats/n1") is None
        assert await store.get("/nodes/n1") is not None, "keys without the lease stay"
        gone = (await take(events, 1))[0]
        assert (gone.type, gone.key) == (EventType.DELETE, "/heartbeats/n1")
        await events.aclose()

        with pytest.raises(LeaseNotFound):
            await store.keepalive(lease.id)
        before = await snapshot(store)
        with pytest.raises(LeaseNotFound):
            await store.put("/heartbeats/n1", b"zombie", lease=lease.id)
        assert await snapshot(store) == before
        assert await store.get_lease(lease.id) is None


async def test_expire_leases_tick(harness: StoreHarness) -> None:
    if not harness.clock_leases:
        pytest.skip("etcd expires leases itself: there is no tick to drive")
    async with harness.opened() as store:
        short = await store.grant_lease(5)
        long = await store.grant_lease(60)
        await store.put("/s", b"", lease=short.id)
        await store.put("/l", b"", lease=long.id)
        assert await store.expire_leases() == []
        harness.clock.advance(5)
        assert await store.expire_leases() == [short.id]
        assert [e.key for e in await store.range("/")] == ["/l"]


async def test_revoke_deletes_attached_keys(harness: StoreHarness) -> None:
    async with harness.opened() as store:
        lease = await store.grant_lease(30)
        await store.put("/a", b"", lease=lease.id)
        await store.put("/b", b"", lease=lease.id)
        await store.put("/c", b"")
        rev = await store.revision()
        events = store.watch("/", start_revision=rev + 1)
        assert await store.revoke(lease.id) == 2
        harness.after(rev, await store.revision())
        gone = await take(events, 2)
        assert len({e.revision for e in gone}) == 1, "a revoke deletes its keys at one revision"
        await events.aclose()
        assert [e.key for e in await store.range("/")] == ["/c"]
        with pytest.raises(LeaseNotFound):
            await store.revoke(lease.id)
        with pytest.raises(LeaseNotFound):
            await store.revoke(424242)


async def test_put_without_lease_detaches_key(harness: StoreHarness) -> None:
    async with harness.opened() as store:
        lease = await store.grant_lease(5)
        await store.put("/a", b"1", lease=lease.id)
        await store.put("/a", b"2")
        harness.clock.advance(6)
        entry = await store.get("/a")
        assert entry is not None and entry.lease is None


@pytest.mark.parametrize("ttl", [0, -1, float("nan"), float("inf"), True])
async def test_bad_lease_ttl_is_refused(harness: StoreHarness, ttl: float) -> None:
    async with harness.opened() as store:
        with pytest.raises(StoreError, match="ttl"):
            await store.grant_lease(ttl)


# -- durability -----------------------------------------------------------------------


async def test_state_survives_close_and_reopen(harness: StoreHarness) -> None:
    async with harness.opened() as store:
        r1 = await store.put("/a", b"1")
        r2 = (await store.txn([], [Put("/b", b"2"), Put("/c", b"3")])).revision
        lease = await store.grant_lease(30)
        r3 = await store.put("/leased", b"x", lease=lease.id)
        r4 = await store.delete("/c")

    async with harness.opened() as store:
        harness.after(r4 or 0, await store.revision(), 0)  # leases do not bump the revision
        assert [(e.key, e.value) for e in await store.range("/")] == [
            ("/a", b"1"),
            ("/b", b"2"),
            ("/leased", b"x"),
        ]
        events = store.watch("/", start_revision=r1)
        assert [e.revision for e in await take(events, 5)] == [r1, r2, r2, r3, r4]
        await events.aclose()
        restored = await store.get_lease(lease.id)
        assert restored is not None
        assert restored.expires_at == pytest.approx(lease.expires_at, abs=1.5)
        harness.after(r4 or 0, await store.put("/d", b"4"))
        fresh = await store.grant_lease(5)
        assert fresh.id != lease.id, "lease ids are never reused"

    if not harness.clock_leases:
        return
    harness.clock.advance(31)
    async with harness.opened() as store:
        assert await store.get("/leased") is None, "a lease that ran out while closed expires"
