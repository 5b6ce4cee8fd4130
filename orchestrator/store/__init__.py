"""The orchestrator's store: one interface, shaped like etcd's key-value API.

Every implementation (``sqlite``, ``etcd``) offers the same semantics, and
one conformance suite runs against each:

- a global **revision** counter: every committed write (a put, a delete, a whole
  transaction, a lease expiry) gets a new revision greater than every earlier one,
  and every key records the revision that last changed it (``Entry.revision``) and
  created it. A store that is the only writer of its counter (SQLite) bumps it by
  exactly one; on etcd the counter is the cluster's, so writes under other
  namespaces show as gaps;
- **compare-and-swap**: ``put``/``delete`` take ``expect_revision`` (0 = the key must
  not exist) and raise ``Conflict`` without writing anything when it does not hold;
- **transactions**: ``txn(compares, success, failure)`` evaluates every compare and
  then applies one branch, all or nothing, at one revision;
- **leases**: keys attached to a lease vanish (with delete events) when the lease
  expires or is revoked; time comes from the clock given to the store, never from
  the wall clock directly, so tests advance a clock instead of sleeping;
- **watches**: every event under a prefix from a start revision on, in commit order,
  with no gaps; history older than the store keeps raises ``Compacted`` (re-list
  with ``range`` and watch from ``RangeResult.revision + 1``).

Keys are ``/``-separated ASCII strings; their layout is documented in ``keys``.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Iterator, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal, Protocol, runtime_checkable

from orchestrator.errors import Compacted, Conflict, LeaseNotFound, StoreClosed, StoreError

__all__ = [
    "Compacted",
    "Compare",
    "Conflict",
    "Delete",
    "Entry",
    "Event",
    "EventType",
    "Get",
    "Lease",
    "LeaseNotFound",
    "Put",
    "RangeResult",
    "Store",
    "StoreClosed",
    "StoreError",
    "TxnResult",
]


@dataclass(frozen=True)
class Entry:
    key: str
    value: bytes
    revision: int  # the revision that last modified the key (etcd's mod_revision)
    create_revision: int  # the revision that created it (reset by delete + put)
    version: int  # number of puts since creation: 1 after the first
    lease: int | None = None


@dataclass(frozen=True)
class RangeResult:
    """Entries sorted by key, and the store revision they were read at."""

    entries: tuple[Entry, ...]
    revision: int

    def __iter__(self) -> Iterator[Entry]:
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)


class EventType(StrEnum):
    PUT = "put"
    DELETE = "delete"


@dataclass(frozen=True)
class Event:
    type: EventType
    key: str
    value: bytes  # empty for a delete
    revision: int  # the revision of the write; several events may share one (a txn)


@dataclass(frozen=True)
class Lease:
    id: int
    ttl: float  # seconds
    expires_at: float  # unix seconds on the store's clock


@dataclass(frozen=True)
class Compare:
    """One condition of a transaction.

    ``target`` ``revision``/``create_revision``/``version``/``lease`` compare an int
    (a missing key has 0 for all of them); ``value`` compares bytes and is false for
    a missing key (etcd's rule).
    """

    key: str
    target: Literal["revision", "create_revision", "version", "value", "lease"]
    op: Literal["==", "!=", "<", ">"]
    operand: int | bytes

    @classmethod
    def revision(cls, key: str, op: Literal["==", "!=", "<", ">"], revision: int) -> Compare:
        return cls(key, "revision", op, revision)

    @classmethod
    def absent(cls, key: str) -> Compare:
        return cls(key, "revision", "==", 0)

    @classmethod
    def value(cls, key: str, op: Literal["==", "!="], value: bytes) -> Compare:
        return cls(key, "value", op, value)


@dataclass(frozen=True)
class Put:
    key: str
    value: bytes
    lease: int | None = None


@dataclass(frozen=True)
class Delete:
    key: str
    prefix: bool = False  # delete every key under ``key``


@dataclass(frozen=True)
class Get:
    key: str
    prefix: bool = False


TxnOp = Put | Delete | Get
# Per op: Put -> the txn revision (int); Delete -> keys deleted (int); Get -> RangeResult.
TxnResponse = int | RangeResult


@dataclass(frozen=True)
class TxnResult:
    succeeded: bool  # whether the compares held (so the success branch ran)
    revision: int  # the store revision after the transaction
    responses: tuple[TxnResponse, ...]


@runtime_checkable
class Store(Protocol):
    """What the orchestrator needs from its store. All methods are coroutines except
    ``watch``, which returns an async generator that runs until it is closed,
    the store is closed (``StoreClosed``) or its history is compacted (``Compacted``)."""

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def revision(self) -> int:
        """The current store revision (0 for an empty, never-written store)."""
        ...

    async def get(self, key: str) -> Entry | None: ...

    async def range(self, prefix: str, *, limit: int | None = None) -> RangeResult:
        """Every key starting with ``prefix`` (sorted), at one revision."""
        ...

    async def put(
        self,
        key: str,
        value: bytes,
        *,
        expect_revision: int | None = None,
        lease: int | None = None,
    ) -> int:
        """Write ``key``; return the new revision. ``expect_revision=0``: must not exist."""
        ...

    async def delete(self, key: str, *, expect_revision: int | None = None) -> int | None:
        """Delete ``key``; return the new revision, or None when there was nothing to delete
        (and no ``expect_revision``: with one, a missing key is a ``Conflict``)."""
        ...

    async def delete_prefix(self, prefix: str) -> int:
        """Delete every key under ``prefix`` at one revision; return how many."""
        ...

    async def txn(
        self,
        compares: Sequence[Compare],
        success: Sequence[TxnOp],
        failure: Sequence[TxnOp] = (),
    ) -> TxnResult: ...

    async def grant_lease(self, ttl: float) -> Lease:
        """A new lease expiring ``ttl`` seconds from now on the store's clock."""
        ...

    async def keepalive(self, lease: int) -> Lease:
        """Push the lease's expiry to now + ttl; ``LeaseNotFound`` if it has expired."""
        ...

    async def revoke(self, lease: int) -> int:
        """End the lease now and delete its keys; return how many keys were deleted."""
        ...

    async def get_lease(self, lease: int) -> Lease | None: ...

    async def expire_leases(self) -> list[int]:
        """Expire every lease whose time has come; return their ids. Stores also do this
        on their own (before every operation), this lets a periodic tick drive it."""
        ...

    async def compact(self, revision: int) -> None:
        """Forget watch history before ``revision`` (keys themselves are unaffected)."""
        ...

    def watch(
        self, prefix: str, *, start_revision: int | None = None
    ) -> AsyncGenerator[Event, None]:
        """Events under ``prefix`` from ``start_revision`` on; by default from the first
        write after this call. ``aclose()`` it when done (it holds a buffer)."""
        ...
