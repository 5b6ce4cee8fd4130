"""The orchestrator's records (apps, workloads, nodes, join tokens) over the store.

One orchestrator process holds them in memory and writes every change through to
the store with compare-and-swap on the revision it last saw, so a restart reloads
exactly what was committed and a second writer can never be silently overwritten.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TypeVar

from google.protobuf.message import Message

from orchestrator.errors import Conflict, OrchestratorError
from orchestrator.store import Compare, Delete, Put, Store, keys
from protos import control_pb2

M = TypeVar("M", bound=Message)


@dataclass
class _Slot:
    record: Message
    revision: int


@dataclass
class ClusterState:
    store: Store
    apps: dict[tuple[str, str], _Slot] = field(default_factory=dict)
    workloads: dict[str, _Slot] = field(default_factory=dict)
    nodes: dict[str, _Slot] = field(default_factory=dict)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    # The highest store revision loaded or written: the generation of what this
    # orchestrator hands out (pull-mode nodes refuse an older one).
    revision: int = 0
    # Bumped by every change to the records held here (a write, a reload): what a
    # reader derives from all of them (the link topology) is recomputed only when it
    # moved, not on every pass over ten thousand records.
    changes: int = 0

    async def load(self) -> None:
        self.changes += 1
        self.apps.clear()
        self.workloads.clear()
        self.nodes.clear()
        self.revision = await self.store.revision()
        for e in await self.store.range(keys.APPS):
            rec = _parse(control_pb2.AppRecord, e.value)
            self.apps[(rec.app.tenant, rec.app.name)] = _Slot(rec, e.revision)
        for e in await self.store.range(keys.WORKLOADS):
            w = _parse(control_pb2.Workload, e.value)
            self.workloads[w.id] = _Slot(w, e.revision)
        for e in await self.store.range(keys.NODES):
            n = _parse(control_pb2.NodeRecord, e.value)
            self.nodes[n.name] = _Slot(n, e.revision)

    # -- reads (copies: callers mutate and save) ----------------------------------

    def app(self, tenant: str, name: str) -> control_pb2.AppRecord | None:
        slot = self.apps.get((tenant, name))
        return _copy(slot.record) if slot else None  # type: ignore[return-value]

    def all_apps(self) -> list[control_pb2.AppRecord]:
        return [_copy(s.record) for s in self.apps.values()]  # type: ignore[misc]

    def workload(self, wid: str) -> control_pb2.Workload | None:
        slot = self.workloads.get(wid)
        return _copy(slot.record) if slot else None  # type: ignore[return-value]

    def all_workloads(self) -> list[control_pb2.Workload]:
        return [_copy(s.record) for s in self.workloads.values()]  # type: ignore[misc]

    def node(self, name: str) -> control_pb2.NodeRecord | None:
        slot = self.nodes.get(name)
        return _copy(slot.record) if slot else None  # type: ignore[return-value]

    def node_by_id(self, node_id: str) -> control_pb2.NodeRecord | None:
        for slot in self.nodes.values():
            if slot.record.id == node_id:  # type: ignore[attr-defined]
                return _copy(slot.record)  # type: ignore[return-value]
        return None

    def all_nodes(self) -> list[control_pb2.NodeRecord]:
        return [_copy(s.record) for s in self.nodes.values()]  # type: ignore[misc]

    # -- read-only views (no copy) ---------------------------------------------------
    # For loops that only look: every heartbeat of every node, every reconcile tick.
    # Copying every record there is what made the orchestrator's idle cost grow with
    # nodes x instances. The message returned is the stored one: never mutate it
    # (take a copy with workload()/node() to change and save a record).

    def peek_workload(self, wid: str) -> control_pb2.Workload | None:
        slot = self.workloads.get(wid)
        return slot.record if slot else None  # type: ignore[return-value]

    def peek_workloads(self) -> list[control_pb2.Workload]:
        return [s.record for s in self.workloads.values()]  # type: ignore[misc]

    def peek_node(self, name: str) -> control_pb2.NodeRecord | None:
        slot = self.nodes.get(name)
        return slot.record if slot else None  # type: ignore[return-value]

    def peek_nodes(self) -> list[control_pb2.NodeRecord]:
        return [s.record for s in self.nodes.values()]  # type: ignore[misc]

    def peek_app(self, tenant: str, name: str) -> control_pb2.AppRecord | None:
        slot = self.apps.get((tenant, name))
        return slot.record if slot else None  # type: ignore[return-value]

    def peek_apps(self) -> list[control_pb2.AppRecord]:
        return [s.record for s in self.apps.values()]  # type: ignore[misc]

    # -- writes ---------------------------------------------------------------------

    async def save_node(self, node: control_pb2.NodeRecord) -> None:
        key = keys.node(node.name)
        slot = self.nodes.get(node.name)
        rev = await self.store.put(
            key, node.SerializeToString(), expect_revision=slot.revision if slot else 0
        )
        self.nodes[node.name] = _Slot(_copy(node), rev)
        self.revision = max(self.revision, rev)
        self.changes += 1

    async def save_workload(self, w: control_pb2.Workload) -> None:
        slot = self.workloads.get(w.id)
        rev = await self.store.put(
            keys.workload(w.id), w.SerializeToString(), expect_revision=slot.revision if slot else 0
        )
        self.workloads[w.id] = _Slot(_copy(w), rev)
        self.revision = max(self.revision, rev)
        self.changes += 1

    async def delete_workload(self, wid: str) -> None:
        slot = self.workloads.get(wid)
        if slot is None:
            return
        rev = await self.store.delete(keys.workload(wid), expect_revision=slot.revision)
        del self.workloads[wid]
        self.revision = max(self.revision, rev or 0)
        self.changes += 1

    async def commit(
        self,
        *,
        apps: Iterable[control_pb2.AppRecord] = (),
        delete_apps: Iterable[tuple[str, str]] = (),
        workloads: Iterable[control_pb2.Workload] = (),
        delete_workloads: Iterable[str] = (),
    ) -> None:
        """Write several records in one transaction: all or nothing (an apply must
        never leave an app without its workloads or the reverse)."""
        compares: list[Compare] = []
        ops: list[Put | Delete] = []
        apps, workloads = list(apps), list(workloads)
        delete_apps, delete_workloads = list(delete_apps), list(delete_workloads)
        for a in apps:
            key = keys.app(a.app.tenant, a.app.name)
            slot = self.apps.get((a.app.tenant, a.app.name))
            compares.append(
                Compare.revision(key, "==", slot.revision) if slot else Compare.absent(key)
            )
            ops.append(Put(key, a.SerializeToString()))
        for t, n in delete_apps:
            key = keys.app(t, n)
            slot = self.apps.get((t, n))
            if slot:
                compares.append(Compare.revision(key, "==", slot.revision))
                ops.append(Delete(key))
        for w in workloads:
            key = keys.workload(w.id)
            wslot = self.workloads.get(w.id)
            compares.append(
                Compare.revision(key, "==", wslot.revision) if wslot else Compare.absent(key)
            )
            ops.append(Put(key, w.SerializeToString()))
        for wid in delete_workloads:
            key = keys.workload(wid)
            wslot = self.workloads.get(wid)
            if wslot:
                compares.append(Compare.revision(key, "==", wslot.revision))
                ops.append(Delete(key))
        if not ops:
            return
        result = await self.store.txn(compares, ops)
        if not result.succeeded:
            raise Conflict("apply", 0, result.revision)
        rev = result.revision
        self.revision = max(self.revision, rev)
        self.changes += 1
        for a in apps:
            self.apps[(a.app.tenant, a.app.name)] = _Slot(_copy(a), rev)
        for t, n in delete_apps:
            self.apps.pop((t, n), None)
        for w in workloads:
            self.workloads[w.id] = _Slot(_copy(w), rev)
        for wid in delete_workloads:
            self.workloads.pop(wid, None)


def _copy(msg: M) -> M:
    out = type(msg)()
    out.CopyFrom(msg)
    return out


def _parse(cls: type[M], data: bytes) -> M:
    msg = cls()
    try:
        msg.ParseFromString(data)
    except Exception as exc:
        raise OrchestratorError(f"corrupted {cls.__name__} record in the store: {exc}") from None
    return msg
