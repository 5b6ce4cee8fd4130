"""Leader election and fencing through the store.

- **Campaign.** An orchestrator becomes leader by creating ``/leader`` attached to
  a lease of its own, in one transaction that also bumps ``/counters/leader-epoch``
  (compare-and-swap): each leadership gets an epoch strictly greater than every
  earlier one, and the epoch and the leader key are written at one revision.
- **Holding.** The leader keeps its lease alive every ``ttl / 3``. It counts itself
  leader only until ``ttl`` after the last keepalive it *sent* that was answered
  (minus a margin), so a leader cut off from the store (partitioned, paused, or the
  store has lost quorum) stops minting and scheduling before the lease can have
  run out and a successor can have been elected: it fails closed.
- **Fencing.** Every write of the orchestrator goes through ``FencedStore``, which
  adds ``/leader``'s create revision == the one this leadership created to the
  transaction. A deposed leader's write can therefore never commit, however late
  it arrives: its transaction fails and it gets ``NotLeader``.

On SQLite (``exclusive``: one orchestrator, the file locked by one process) there
is nobody to compete with: the campaign replaces a ``/leader`` left by the previous
process, takes no lease (a test's fake clock must not depose it) and holds forever;
the epoch still grows by one per start.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from dataclasses import dataclass

from orchestrator.errors import (
    Conflict,
    LeaseNotFound,
    NotLeader,
    StoreClosed,
    StoreError,
)
from orchestrator.store import (
    Compare,
    Delete,
    Entry,
    Event,
    EventType,
    Get,
    Lease,
    Put,
    RangeResult,
    Store,
    TxnOp,
    TxnResult,
    keys,
)

log = logging.getLogger("capstan.orchestrator.leader")

EPOCH_COUNTER = keys.counter("leader-epoch")
DEFAULT_TTL = 2.0
_MARGIN = 0.25  # of the ttl: stop counting as leader this much before the lease can end


@dataclass(frozen=True)
class LeaderInfo:
    """Who leads, as recorded in the store."""

    identity: str
    address: str  # mTLS: ControlService and NodeGateway
    epoch: int  # 0 in an orchestrator's membership record
    since: float
    join_address: str = ""

    def encode(self) -> bytes:
        return json.dumps(
            {
                "id": self.identity,
                "address": self.address,
                "join": self.join_address,
                "epoch": self.epoch,
                "since": self.since,
            },
            sort_keys=True,
        ).encode()

    @classmethod
    def decode(cls, data: bytes) -> LeaderInfo:
        try:
            raw = json.loads(data)
            return cls(
                str(raw["id"]),
                str(raw["address"]),
                int(raw["epoch"]),
                float(raw["since"]),
                str(raw.get("join", "")),
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise StoreError(f"unreadable orchestrator record: {exc}") from None


async def current_leader(store: Store) -> LeaderInfo | None:
    entry = await store.get(keys.LEADER)
    return None if entry is None else LeaderInfo.decode(entry.value)


async def orchestrators(store: Store) -> list[LeaderInfo]:
    """Every orchestrator that is up (its membership lease alive), by name."""
    out = []
    for entry in await store.range(keys.ORCHESTRATORS):
        with contextlib.suppress(StoreError):
            out.append(LeaderInfo.decode(entry.value))
    return out


class Leadership:
    """Campaigns, holds and loses leadership for one orchestrator."""

    def __init__(
        self,
        store: Store,
        *,
        identity: str,
        address: str,
        join_address: str = "",
        ttl: float = DEFAULT_TTL,
        exclusive: bool = False,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if ttl <= 0:
            raise StoreError("the leader lease ttl must be positive")
        self.store = store
        self.identity = identity
        self.address = address  # the NodeGateway and ControlService address it serves
        self.join_address = join_address  # its Join endpoint
        self.ttl = ttl
        self._exclusive = exclusive
        self._clock = clock
        self._monotonic = monotonic
        self.epoch = 0  # of the current (or last) leadership of this orchestrator
        self._leader_revision = 0  # /leader's create revision while we lead
        self._lease: Lease | None = None
        self._valid_until = 0.0  # monotonic: leader until then, unless renewed
        self.lost = asyncio.Event()
        self.highest_seen = 0  # the highest epoch seen in the store

    # -- state ----------------------------------------------------------------------

    @property
    def leading(self) -> bool:
        return self._leader_revision > 0 and self._monotonic() < self._valid_until

    def current_epoch(self) -> int:
        """The epoch to mint with; ``NotLeader`` when this orchestrator may not act."""
        if not self.leading:
            raise NotLeader("this orchestrator is not the leader", epoch=self.highest_seen)
        return self.epoch

    def fence(self) -> Compare:
        """The compare every write of this leadership carries."""
        if not self.leading:
            raise NotLeader("this orchestrator is not the leader", epoch=self.highest_seen)
        return Compare(keys.LEADER, "create_revision", "==", self._leader_revision)

    # -- campaign ---------------------------------------------------------------------

    async def campaign(self) -> int:
        """Wait until this orchestrator leads; returns its new epoch."""
        while True:
            epoch = await self._try_once()
            if epoch:
                return epoch
            await self._wait_vacant()

    async def _try_once(self) -> int:
        if self._exclusive:
            await self.store.delete(keys.LEADER)
        counter = await self.store.get(EPOCH_COUNTER)
        previous = int(counter.value) if counter else 0
        self.highest_seen = max(self.highest_seen, previous)
        epoch = previous + 1
        lease = None if self._exclusive else await self.store.grant_lease(self.ttl)
        sent = self._monotonic()
        info = LeaderInfo(self.identity, self.address, epoch, self._clock(), self.join_address)
        counter_cmp = (
            Compare.revision(EPOCH_COUNTER, "==", counter.revision)
            if counter
            else Compare.absent(EPOCH_COUNTER)
        )
        try:
            result = await self.store.txn(
                [Compare.absent(keys.LEADER), counter_cmp],
                [
                    Put(EPOCH_COUNTER, str(epoch).encode()),
                    Put(keys.LEADER, info.encode(), lease.id if lease else None),
                ],
            )
        except BaseException:
            await self._drop(lease)
            raise
        if not result.succeeded:
            await self._drop(lease)
            return 0
        self._lease = lease
        self.epoch = epoch
        self.highest_seen = epoch
        self._leader_revision = result.revision
        self._valid_until = math.inf if lease is None else sent + self.ttl * (1 - _MARGIN)
        self.lost.clear()
        log.info("%s leads with epoch %d", self.identity, epoch)
        return epoch

    async def _drop(self, lease: Lease | None) -> None:
        if lease is not None:
            with contextlib.suppress(StoreError):
                await self.store.revoke(lease.id)

    async def _wait_vacant(self) -> None:
        """Until ``/leader`` is deleted (or at most one ttl, then look again)."""
        entry = await self.store.get(keys.LEADER)
        if entry is None:
            return
        with contextlib.suppress(StoreError):
            info = LeaderInfo.decode(entry.value)
            self.highest_seen = max(self.highest_seen, info.epoch)
        events = self.store.watch(keys.LEADER, start_revision=entry.revision + 1)
        try:
            async with asyncio.timeout(self.ttl):
                async for event in events:
                    if event.key == keys.LEADER and event.type is EventType.DELETE:
                        return
        except TimeoutError:
            return
        finally:
            await events.aclose()

    # -- holding ----------------------------------------------------------------------

    async def hold(self) -> None:
        """Keep the lease alive; returns when leadership is lost (and says so in ``lost``)."""
        lease = self._lease
        if lease is None:  # exclusive: nobody can take it
            try:
                await asyncio.Event().wait()
            finally:
                self._step_down()
        assert lease is not None  # noqa: S101 - the wait above never returns
        try:
            while self._leader_revision:
                await asyncio.sleep(self.ttl / 3)
                sent = self._monotonic()
                try:
                    await asyncio.wait_for(self.store.keepalive(lease.id), self.ttl / 3)
                except (LeaseNotFound, StoreClosed):
                    log.warning("%s lost its leader lease (epoch %d)", self.identity, self.epoch)
                    return
                except (StoreError, TimeoutError) as exc:
                    if not self.leading:
                        log.warning("%s cannot reach the store, steps down: %s", self.identity, exc)
                        return
                    continue
                # Answered: the lease, hence /leader, is still ours; no successor exists.
                self._valid_until = sent + self.ttl * (1 - _MARGIN)
        finally:
            self._step_down()

    def _step_down(self) -> None:
        self._leader_revision = 0
        self._valid_until = 0.0
        self.lost.set()

    async def leader(self) -> LeaderInfo | None:
        info = await current_leader(self.store)
        if info is not None:
            self.highest_seen = max(self.highest_seen, info.epoch)
        return info

    async def register(self) -> None:
        """Keep this orchestrator's membership record (its addresses) in the store
        while it runs, leader or not, so nodes and clients can find every orchestrator.
        It is not leader state: written outside the fence, under a lease of its own."""
        name = self.identity.rpartition("/")[2] or self.identity
        key = keys.orchestrator(name)
        while True:
            lease: Lease | None = None
            try:
                info = LeaderInfo(self.identity, self.address, 0, self._clock(), self.join_address)
                if self._exclusive:
                    await self.store.put(key, info.encode())
                    await asyncio.Event().wait()
                lease = await self.store.grant_lease(self.ttl * 3)
                await self.store.put(key, info.encode(), lease=lease.id)
                while True:
                    await asyncio.sleep(self.ttl)
                    await self.store.keepalive(lease.id)
            except StoreError as exc:
                log.warning("membership record: %s; retrying", exc)
                await asyncio.sleep(self.ttl / 2)
            except asyncio.CancelledError:
                await self._drop(lease)
                raise

    async def resign(self) -> None:
        """Give leadership up at once (a clean shutdown): the next leader need not wait."""
        lease, self._lease = self._lease, None
        self._step_down()
        if lease is not None:
            with contextlib.suppress(StoreError):
                await self.store.revoke(lease.id)


class FencedStore:
    """The store as the orchestrator writes it: every write also checks leadership.

    Reads, leases and watches pass through. A write made while not leading, or whose
    fence fails in the store, raises ``NotLeader`` and writes nothing."""

    def __init__(self, store: Store, leadership: Leadership) -> None:
        self.inner = store
        self.leadership = leadership

    async def open(self) -> None:
        await self.inner.open()

    async def close(self) -> None:
        await self.inner.close()

    async def revision(self) -> int:
        return await self.inner.revision()

    async def get(self, key: str) -> Entry | None:
        return await self.inner.get(key)

    async def range(self, prefix: str, *, limit: int | None = None) -> RangeResult:
        return await self.inner.range(prefix, limit=limit)

    def watch(
        self, prefix: str, *, start_revision: int | None = None
    ) -> AsyncGenerator[Event, None]:
        return self.inner.watch(prefix, start_revision=start_revision)

    async def grant_lease(self, ttl: float) -> Lease:
        return await self.inner.grant_lease(ttl)

    async def keepalive(self, lease: int) -> Lease:
        return await self.inner.keepalive(lease)

    async def revoke(self, lease: int) -> int:
        return await self.inner.revoke(lease)

    async def get_lease(self, lease: int) -> Lease | None:
        return await self.inner.get_lease(lease)

    async def expire_leases(self) -> list[int]:
        return await self.inner.expire_leases()

    async def compact(self, revision: int) -> None:
        return await self.inner.compact(revision)

    async def _fenced(
        self, compares: Sequence[Compare], success: Sequence[TxnOp], failure: Sequence[TxnOp]
    ) -> TxnResult:
        fence = self.leadership.fence()
        result = await self.inner.txn([fence, *compares], success, [Get(keys.LEADER), *failure])
        if result.succeeded:
            return result
        leader = result.responses[0]
        assert isinstance(leader, RangeResult)  # noqa: S101 - the Get above
        if not leader.entries or leader.entries[0].create_revision != fence.operand:
            self.leadership._step_down()
            raise NotLeader(
                f"leadership of epoch {self.leadership.epoch} has ended: nothing was written",
                epoch=self.leadership.highest_seen,
            )
        return TxnResult(False, result.revision, result.responses[1:])

    async def txn(
        self,
        compares: Sequence[Compare],
        success: Sequence[TxnOp],
        failure: Sequence[TxnOp] = (),
    ) -> TxnResult:
        return await self._fenced(compares, success, failure)

    async def put(
        self,
        key: str,
        value: bytes,
        *,
        expect_revision: int | None = None,
        lease: int | None = None,
    ) -> int:
        compares = [] if expect_revision is None else [Compare.revision(key, "==", expect_revision)]
        result = await self._fenced(compares, [Put(key, value, lease)], [Get(key)])
        if not result.succeeded:
            raise Conflict(key, expect_revision or 0, _revision_of(result))
        return result.revision

    async def delete(self, key: str, *, expect_revision: int | None = None) -> int | None:
        compares = [] if expect_revision is None else [Compare.revision(key, "==", expect_revision)]
        result = await self._fenced(compares, [Delete(key)], [Get(key)])
        if not result.succeeded:
            raise Conflict(key, expect_revision or 0, _revision_of(result))
        return result.revision if result.responses[0] else None

    async def delete_prefix(self, prefix: str) -> int:
        result = await self._fenced([], [Delete(prefix, prefix=True)], [])
        deleted = result.responses[0]
        return deleted if isinstance(deleted, int) else 0


def _revision_of(result: TxnResult) -> int:
    found = result.responses[0]
    return found.entries[0].revision if isinstance(found, RangeResult) and found.entries else 0


async def run_as_leader(
    leadership: Leadership,
    on_elected: Callable[[int], Awaitable[None]],
    on_lost: Callable[[], Awaitable[None]],
    *,
    retry: float = 0.5,
) -> None:
    """Campaign, lead, and campaign again after losing, until cancelled."""
    while True:
        try:
            epoch = await leadership.campaign()
        except StoreError as exc:
            log.warning("campaign failed: %s; retrying", exc)
            await asyncio.sleep(retry)
            continue
        # The lease is kept alive from the first moment: a slow start of the
        # leader's duties (reading the store back) must not let it lapse.
        holding = asyncio.create_task(leadership.hold(), name="leader-lease")
        try:
            await on_elected(epoch)
            await holding
        except (StoreError, NotLeader) as exc:
            log.warning("leadership of epoch %d ends: %s", epoch, exc)
            await leadership.resign()
        finally:
            holding.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await holding
            await on_lost()


__all__ = [
    "DEFAULT_TTL",
    "EPOCH_COUNTER",
    "FencedStore",
    "LeaderInfo",
    "Leadership",
    "current_leader",
    "orchestrators",
    "run_as_leader",
]
