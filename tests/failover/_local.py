"""The orchestrator's pieces on an injected clock, with no server: a real SQLite store,
real records and audit log, the Reconciler and the failover/rebalance/autoscale logic
on top. Nothing here calls a node."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import cast

from orchestrator.audit import AuditLog
from orchestrator.liveness import Tracker
from orchestrator.nodecalls import NodeCaller
from orchestrator.reconciler import Reconciler
from orchestrator.state import ClusterState
from orchestrator.store.sqlite import SqliteStore
from protos import control_pb2
from tests.waiting import FakeClock


@dataclass
class Local:
    clock: FakeClock
    store: SqliteStore
    state: ClusterState
    tracker: Tracker
    audit: AuditLog
    reconciler: Reconciler

    async def add_node(self, name: str, *, cpus: float = 2.0, state: str = "ready") -> None:
        await self.state.save_node(
            control_pb2.NodeRecord(
                name=name,
                id=f"spiffe://t/node/{name}",
                address="127.0.0.1:1",
                cpus=cpus,
                memory=4 << 30,
                state=state,
                mode="push",
            )
        )

    async def events(self, name: str) -> list[dict[str, object]]:
        return [e for e in await self.audit.entries() if e["event"] == name]


async def local(root: Path, *, heartbeat: float = 1.0, grace: float = 3.0) -> Local:
    clock = FakeClock(1_000_000.0)
    store = SqliteStore(root / "store.db", clock=clock)
    await store.open()
    state = ClusterState(store)
    await state.load()
    tracker = Tracker(heartbeat=heartbeat, grace=grace, clock=clock, started=clock())
    audit = AuditLog(store, clock)
    # The reconciler is only asked for decisions here; it never calls a node.
    reconciler = Reconciler(state, tracker, cast(NodeCaller, None), audit, clock=clock)
    return Local(clock, store, state, tracker, audit, reconciler)
