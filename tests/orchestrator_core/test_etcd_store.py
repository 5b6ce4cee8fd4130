"""What only the etcd store has to show: leases on the cluster's clock, the request
size limit, namespaces, and watches that outlive a broken stream."""

from __future__ import annotations

import asyncio

import pytest

from orchestrator.errors import StoreUnavailable
from orchestrator.etcdproc import Member
from orchestrator.store import Compare, EventType, LeaseNotFound, Put, StoreError
from orchestrator.store._checks import MAX_VALUE
from orchestrator.store.etcd import EtcdStore

from ._harness import FakeClock
from .conftest import test_namespace


def _store(endpoints: str, clock: FakeClock | None = None, **kw: object) -> EtcdStore:
    return EtcdStore(endpoints, namespace=test_namespace(), clock=clock or FakeClock(), **kw)  # type: ignore[arg-type]


async def test_lease_expires_on_the_clusters_clock(etcd_endpoints: str) -> None:
    async with _store(etcd_endpoints) as store:
        lease = await store.grant_lease(2)  # etcd may round it up to its minimum
        put = await store.put("/heartbeats/n1", b"alive", lease=lease.id)
        again = await store.keepalive(lease.id)
        assert again.ttl >= 2
        await store.put("/nodes/n1", b"registered")
        events = store.watch("/heartbeats/", start_revision=put)
        assert (await anext(events)).type is EventType.PUT
        gone = await asyncio.wait_for(anext(events), 15)
        assert (gone.type, gone.key) == (EventType.DELETE, "/heartbeats/n1")
        await events.aclose()
        assert await store.get("/nodes/n1") is not None, "keys without the lease stay"
        with pytest.raises(LeaseNotFound):
            await store.keepalive(lease.id)
        before = [e.key for e in await store.range("/")]
        with pytest.raises(LeaseNotFound):
            await store.put("/heartbeats/n1", b"zombie", lease=lease.id)
        with pytest.raises(LeaseNotFound):
            await store.txn([], [Put("/a", b"1"), Put("/b", b"2", lease=lease.id)])
        assert [e.key for e in await store.range("/")] == before
        assert await store.get_lease(lease.id) is None
        with pytest.raises(LeaseNotFound):
            await store.revoke(lease.id)


async def test_lease_dates_follow_the_injected_clock(etcd_endpoints: str) -> None:
    clock = FakeClock()
    async with _store(etcd_endpoints, clock) as store:
        lease = await store.grant_lease(30)
        assert lease.expires_at == clock() + lease.ttl
        info = await store.get_lease(lease.id)
        assert info is not None and clock() + 28 <= info.expires_at <= clock() + 30
        await store.revoke(lease.id)


async def test_values_up_to_the_limit_and_not_beyond(etcd_endpoints: str) -> None:
    async with _store(etcd_endpoints) as store:
        big = bytes(range(256)) * (MAX_VALUE // 256)
        await store.put("/big", big)
        assert (await store.get("/big")).value == big  # type: ignore[union-attr]
        with pytest.raises(StoreError, match="exceeds"):
            await store.put("/bigger", big + b"x")
        # Two values that each fit but not together: refused before etcd sees them.
        with pytest.raises(StoreError, match="split it"):
            await store.txn([], [Put("/one", big), Put("/two", big)])
        assert [e.key for e in await store.range("/")] == ["/big"]
        listed = await store.range("/")
        assert listed.entries[0].value == big


async def test_range_pages_through_many_keys_at_one_revision(etcd_endpoints: str) -> None:
    async with _store(etcd_endpoints) as store:
        for chunk in range(0, 2500, 100):  # etcd's default --max-txn-ops is 128
            await store.txn([], [Put(f"/many/{i:05d}", b"v") for i in range(chunk, chunk + 100)])
        found = await store.range("/many/")
        assert [e.key for e in found] == [f"/many/{i:05d}" for i in range(2500)]
        assert len(await store.range("/many/", limit=1200)) == 1200


async def test_namespaces_do_not_see_each_other(etcd_endpoints: str) -> None:
    async with _store(etcd_endpoints) as one, _store(etcd_endpoints) as two:
        events = two.watch("/", start_revision=await two.revision())
        await one.put("/apps/a", b"one's")
        mine = await two.put("/apps/a", b"two's")
        assert (await anext(events)).revision == mine
        await events.aclose()
        assert [e.value for e in await one.range("/")] == [b"one's"]
        assert [e.value for e in await two.range("/")] == [b"two's"]
        await one.delete_prefix("/")
        assert [e.value for e in await two.range("/")] == [b"two's"]


async def test_watch_survives_a_restart_of_etcd(private_etcd: Member) -> None:
    async with _store(private_etcd.client_endpoint) as store:
        start = await store.put("/w/0", b"0")
        events = store.watch("/w/", start_revision=start)
        assert (await anext(events)).key == "/w/0"
        await store.txn([], [Put("/w/1", b"1"), Put("/w/2", b"2")])
        assert (await anext(events)).key == "/w/1"  # /w/2 is still in the watch's hands
        private_etcd.kill()
        private_etcd.start([private_etcd])
        private_etcd.wait_listening()
        for i in range(3, 6):
            await store.put(f"/w/{i}", str(i).encode())
        got = [await asyncio.wait_for(anext(events), 20) for _ in range(4)]
        await events.aclose()
        assert [e.key for e in got] == ["/w/2", "/w/3", "/w/4", "/w/5"], "lost or repeated"


async def test_writes_fail_closed_while_etcd_is_down(private_etcd: Member) -> None:
    async with _store(private_etcd.client_endpoint, timeout=1.0) as store:
        rev = await store.put("/k", b"1")
        private_etcd.kill()
        with pytest.raises(StoreUnavailable):
            await store.put("/k", b"2")
        with pytest.raises(StoreUnavailable):
            await store.txn([Compare.revision("/k", "==", rev)], [Put("/k", b"3")])
        private_etcd.start([private_etcd])
        private_etcd.wait_listening()
        entry = None
        async with asyncio.timeout(30):  # until the restarted member serves again
            while True:
                try:
                    entry = await store.get("/k")
                    break
                except StoreUnavailable:
                    continue
        assert entry is not None and entry.value in (b"1", b"2")
