"""The orchestrator's append-only, hash-chained audit log, kept in the store.

Entry ``n`` is stored at ``/audit/<n>`` as canonical JSON holding the SHA-256 of
entry ``n-1``; changing, removing or reordering any entry breaks the chain at that
point, and ``verify`` names the first entry that does not fit.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from orchestrator.store import Compare, Put, Store, keys

GENESIS = "0" * 64
_COUNTER = keys.counter("audit")


def _canonical(entry: dict[str, Any]) -> bytes:
    return json.dumps(entry, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


class AuditLog:
    def __init__(self, store: Store, clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._clock = clock
        self._lock = asyncio.Lock()
        self._seq = -1
        self._prev = GENESIS
        self._counter_rev = 0
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
        """Append one event; returns its sequence number."""
        async with self._lock:
            if not self._loaded:
                await self._load()
            for _ in range(5):
                seq = self._seq + 1
                entry = {
                    "seq": seq,
                    "at": round(self._clock(), 6),
                    "event": event,
                    **fields,
                    "prev": self._prev,
                }
                data = _canonical(entry)
                cmp = (
                    Compare.revision(_COUNTER, "==", self._counter_rev)
                    if self._counter_rev
                    else Compare.absent(_COUNTER)
                )
                result = await self._store.txn(
                    [cmp], [Put(keys.audit(seq), data), Put(_COUNTER, str(seq).encode())]
                )
                if result.succeeded:
                    self._seq, self._prev, self._counter_rev = (
                        seq,
                        hashlib.sha256(data).hexdigest(),
                        result.revision,
                    )
                    return seq
                await self._load()  # another writer appended: continue from its tail
            raise RuntimeError("audit log: could not append after 5 attempts")

    async def entries(self, *, since: int = 0) -> list[dict[str, Any]]:
        out = []
        for e in await self._store.range(keys.AUDIT):
            item: dict[str, Any] = json.loads(e.value)
            if item.get("seq", -1) >= since:
                out.append(item)
        return out

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
