"""Request-reply attribution: every task given to a node has a request id, and a
completion is accepted only from that node, only while outstanding, and only once.

Outstanding tasks live in the store (``/tasks/<request-id>``) so a restarted
orchestrator still knows what it waits for; completing deletes the record with a
compare-and-swap, which is what makes "only once" hold even under a race.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from dataclasses import asdict, dataclass

from orchestrator.errors import Conflict, OrchestratorError
from orchestrator.store import Store, keys


class TaskRefused(OrchestratorError):
    """A completion that does not match an outstanding task of the caller (PERMISSION_DENIED)."""


@dataclass(frozen=True)
class TaskRecord:
    request_id: str
    node: str  # the node the task was given to
    kind: str
    resource: str
    workload: str
    source: str  # the node it fetches from
    issued_at: float
    expires_at: float


@dataclass(frozen=True)
class Completion:
    task: TaskRecord
    ok: bool
    message: str


class TaskBook:
    def __init__(self, store: Store, clock: Callable[[], float]) -> None:
        self._store = store
        self._clock = clock

    async def issue(
        self, *, node: str, kind: str, resource: str, workload: str, source: str, ttl: float
    ) -> TaskRecord:
        now = self._clock()
        record = TaskRecord(
            request_id=secrets.token_hex(16),
            node=node,
            kind=kind,
            resource=resource,
            workload=workload,
            source=source,
            issued_at=now,
            expires_at=now + ttl,
        )
        await self._store.put(
            keys.task(record.request_id), json.dumps(asdict(record)).encode(), expect_revision=0
        )
        return record

    async def outstanding(self) -> list[TaskRecord]:
        return [TaskRecord(**json.loads(e.value)) for e in await self._store.range(keys.TASKS)]

    async def complete(self, node: str, request_id: str, *, ok: bool, message: str) -> Completion:
        if not request_id or len(request_id) > 64:
            raise TaskRefused("malformed request id")
        entry = await self._store.get(keys.task(request_id))
        if entry is None:
            raise TaskRefused(
                f"request {request_id} is not outstanding (unknown, expired or completed)"
            )
        task = TaskRecord(**json.loads(entry.value))
        if task.node != node:
            raise TaskRefused(f"request {request_id} was given to {task.node}, not {node}")
        try:
            await self._store.delete(keys.task(request_id), expect_revision=entry.revision)
        except Conflict:
            raise TaskRefused(f"request {request_id} was already completed") from None
        return Completion(task, ok, message[:1000])

    async def expire(self) -> list[TaskRecord]:
        """Drop tasks past their deadline; the reconciler retries their work."""
        now = self._clock()
        gone = []
        for e in await self._store.range(keys.TASKS):
            task = TaskRecord(**json.loads(e.value))
            if task.expires_at <= now:
                try:
                    await self._store.delete(e.key, expect_revision=e.revision)
                    gone.append(task)
                except Conflict:
                    pass
        return gone
