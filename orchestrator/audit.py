"""The orchestrator's append-only, hash-chained audit log, kept in the store.

Entry ``n`` is stored at ``/audit/<n>`` as canonical JSON holding the SHA-256 of
entry ``n-1``; changing, removing or reordering any entry breaks the chain at that
point, and ``verify`` names the first entry that does not fit.

Readers pay for what they read, not for the whole log: an entry about an application
is also written, in the same transaction, under that application's index (newest
first), so ``app_events`` is one short range; ``entries(since=..., limit=...)``
reads only the entries asked for (ranges over the decimal blocks of their keys).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Any

from orchestrator._events import app_of
from orchestrator.store import Compare, Put, Store, keys

GENESIS = "0" * 64
_COUNTER = keys.counter("audit")


def _canonical(entry: dict[str, Any]) -> bytes:
    return json.dumps(entry, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


# Entries written by one store transaction at most. etcd refuses transactions of more
# than 128 operations by default (--max-txn-ops); a batch is its entries plus the
# counter, so 100 stays clear of that with room for the store's own compares.
# Each entry is one or two puts (an application's entries are indexed too).
MAX_BATCH = 60


class _Pending:
    __slots__ = ("at", "event", "fields", "future")

    def __init__(
        self, event: str, fields: dict[str, Any], at: float, future: asyncio.Future[int]
    ) -> None:
        self.event = event
        self.fields = fields
        self.at = at
        self.future = future


class AuditLog:
    """The chain in the store, appended by group commit.

    ``record`` queues its entry and waits until the transaction holding it has
    committed (durable in the store) before returning, so nothing acts on an event
    that a crash could lose. Entries queued while one transaction is being written go
    together into the next one: under load one store write (one fsync on SQLite)
    carries up to ``MAX_BATCH`` entries, alone an entry costs what it did before.
    Batching goes through the ``Store`` interface only (one ``txn``), so every store
    implementation gets it.
    """

    def __init__(self, store: Store, clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._clock = clock
        self._seq = -1
        self._prev = GENESIS
        self._counter_rev = 0
        self._loaded = False
        self._pending: deque[_Pending] = deque()
        self._flusher: asyncio.Task[None] | None = None
        self.batches = 0  # transactions written (for benchmarks: entries / batches)

    def reload(self) -> None:
        """Read the chain's head from the store again before the next append (a new
        leader: another orchestrator may have appended since this one last did)."""
        self._loaded = False

    async def _load(self) -> None:
        entry = await self._store.get(_COUNTER)
        if entry is None:
            self._seq, self._prev, self._counter_rev = -1, GENESIS, 0
        else:
            self._seq = int(entry.value)
            self._counter_rev = entry.revision
            last = await self._store.get(keys.audit(self._seq))
            self._prev = hashlib.sha256(last.value).hexdigest() if last else GENESIS
        self._loaded = True

    async def record(self, event: str, **fields: Any) -> int:
        """Append one event; returns its sequence number once the entry is committed."""
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._pending.append(_Pending(event, fields, round(self._clock(), 6), future))
        if self._flusher is None or self._flusher.done():
            # A task of its own: a caller cancelled while waiting must not stall the
            # entries queued behind its own.
            self._flusher = asyncio.create_task(self._flush(), name="audit-flush")
        return await future

    async def _flush(self) -> None:
        while self._pending:
            batch = [self._pending.popleft() for _ in range(min(MAX_BATCH, len(self._pending)))]
            try:
                seqs = await self._append(batch)
            except BaseException as exc:
                for item in batch:
                    if not item.future.done():
                        item.future.set_exception(
                            exc if isinstance(exc, Exception) else RuntimeError("audit stopped")
                        )
                if not isinstance(exc, Exception):
                    raise
                continue
            for item, seq in zip(batch, seqs, strict=True):
                if not item.future.done():  # its caller may have been cancelled
                    item.future.set_result(seq)

    async def _append(self, batch: list[_Pending]) -> list[int]:
        """Write ``batch`` as the next entries of the chain, in one transaction."""
        if not self._loaded:
            await self._load()
        for _ in range(5):
            seq, prev = self._seq, self._prev
            puts: list[Put] = []
            for item in batch:
                seq += 1
                entry = {"seq": seq, "at": item.at, "event": item.event, **item.fields}
                entry["prev"] = prev
                data = _canonical(entry)
                puts.append(Put(keys.audit(seq), data))
                about = app_of(entry)
                if about is not None:
                    puts.append(Put(keys.audit_by_app(*about, seq), data))
                prev = hashlib.sha256(data).hexdigest()
            cmp = (
                Compare.revision(_COUNTER, "==", self._counter_rev)
                if self._counter_rev
                else Compare.absent(_COUNTER)
            )
            result = await self._store.txn([cmp], [*puts, Put(_COUNTER, str(seq).encode())])
            if result.succeeded:
                first = self._seq + 1
                self._seq, self._prev, self._counter_rev = seq, prev, result.revision
                self.batches += 1
                return list(range(first, seq + 1))
            await self._load()  # another writer appended: continue from its tail
        raise RuntimeError("audit log: could not append after 5 attempts")

    async def entries(self, *, since: int = 0, limit: int = 0) -> list[dict[str, Any]]:
        """Entries from ``since`` on (only the last ``limit`` of them when limit > 0),
        oldest first; reads those entries only."""
        head_entry = await self._store.get(_COUNTER)
        if head_entry is None:
            return []
        head = int(head_entry.value)
        start = max(0, since, head - limit + 1 if limit > 0 else 0)
        if start > head:
            return []
        out: list[dict[str, Any]] = []
        for prefix in _blocks(start, head):
            for e in await self._store.range(prefix):
                item: dict[str, Any] = json.loads(e.value)
                if start <= item.get("seq", -1) <= head:
                    out.append(item)
        return out

    async def app_events(self, tenant: str, app: str, *, limit: int = 20) -> list[dict[str, Any]]:
        """The latest ``limit`` entries about application ``tenant/app``, oldest first."""
        found = await self._store.range(keys.audit_by_app_prefix(tenant, app), limit=limit)
        return [json.loads(e.value) for e in reversed(list(found))]

    async def verify(self) -> tuple[bool, str]:
        """Check the whole chain; (True, summary) or (False, the first bad entry and why)."""
        prev = GENESIS
        expected = 0
        count = 0
        for e in await self._store.range(keys.AUDIT):
            try:
                item = json.loads(e.value)
            except ValueError:
                return False, f"entry at {e.key} is not valid JSON"
            seq = item.get("seq")
            if e.key != keys.audit(expected) or seq != expected:
                return (
                    False,
                    f"entry {expected} is missing or out of order (found {e.key}, seq {seq})",
                )
            if item.get("prev") != prev:
                return (
                    False,
                    f"entry {expected} does not follow entry {expected - 1} (edited or reordered)",
                )
            if _canonical(item) != e.value:
                return False, f"entry {expected} is not in canonical form (edited)"
            prev = hashlib.sha256(e.value).hexdigest()
            expected += 1
            count += 1
        counter = await self._store.get(_COUNTER)
        if counter is not None and int(counter.value) != expected - 1:
            last = int(counter.value)
            message = f"the log ends at entry {expected - 1}, the counter at {last} (tail removed)"
            return False, message
        return True, f"{count} entries, chain intact"

    async def follow(self, since: int = 0) -> AsyncIterator[dict[str, Any]]:
        rev = await self._store.revision()
        for item in await self.entries(since=since):
            yield item
        async for ev in self._store.watch(keys.AUDIT, start_revision=rev + 1):
            if ev.value:
                yield json.loads(ev.value)


def _blocks(start: int, end: int) -> list[str]:
    """Key prefixes covering exactly audit entries ``start..end``: keys are 20 decimal
    digits, so ``/audit/0000000000000000012`` holds entries 120-129; aligned blocks of
    10**k entries share a prefix, and few blocks cover any span."""
    out: list[str] = []
    i = start
    while i <= end:
        k = 0
        while k < 20 and i % 10 ** (k + 1) == 0 and i + 10 ** (k + 1) - 1 <= end:
            k += 1
        key = keys.audit(i)
        out.append(key[: len(key) - k] if k else key)
        i += 10**k
    return out
