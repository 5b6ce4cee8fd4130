"""Node-to-node calls, only by the orchestrator's leave.

When node T must fetch something held by node S (an image it lacks, the volume of a
workload moving to it), the orchestrator mints one token with ``sub`` = T (bound to
T's certificate), ``aud`` = S, ``op`` = the export, ``res`` = the one object, valid
for seconds, and hands it to T as a task with a request id. Nodes hold no standing
credentials for each other and no peer list. The pool rule lives here and only here:
no token ever lets a node of one tenant's pool call a node of another tenant's pool.
"""

from __future__ import annotations

from collections.abc import Callable

from orchestrator.audit import AuditLog
from orchestrator.errors import OrchestratorError
from orchestrator.liveness import Tracker
from orchestrator.minter import Minter
from orchestrator.tasks import TaskBook, TaskRecord
from protos import control_pb2, gateway_pb2
from protos.wire.tasks import EXPORT_OP


class DelegationRefused(OrchestratorError):
    """The orchestrator will not let these two nodes talk."""


def may_delegate(target: control_pb2.NodeRecord, source: control_pb2.NodeRecord) -> bool:
    """Two dedicated pools of different tenants never talk; shared nodes may."""
    if target.name == source.name or "revoked" in (target.state, source.state):
        return False
    return not (target.pool and source.pool and target.pool != source.pool)


class Delegator:
    def __init__(
        self,
        *,
        minter: Minter,
        tasks: TaskBook,
        tracker: Tracker,
        audit: AuditLog,
        send: Callable[[str, gateway_pb2.GatewayMessage], bool],
        ttl: float,
        clock: Callable[[], float],
    ) -> None:
        self._minter = minter
        self._tasks = tasks
        self._tracker = tracker
        self._audit = audit
        self._send = send
        self._ttl = ttl
        self._clock = clock

    async def fetch(
        self,
        *,
        kind: str,
        resource: str,
        workload: str,
        target: control_pb2.NodeRecord,
        source: control_pb2.NodeRecord,
    ) -> TaskRecord:
        op = EXPORT_OP.get(kind)
        if op is None:
            raise DelegationRefused(f"unknown task kind {kind!r}")
        if not may_delegate(target, source):
            await self._audit.record(
                "delegation.refused",
                target=target.name,
                source=source.name,
                op=op,
                res=resource,
                reason="pools of different tenants",
            )
            raise DelegationRefused(f"{target.name} may not call {source.name}")
        thumbprint = self._tracker.thumbprint(target.name)
        if not thumbprint:
            raise DelegationRefused(f"{target.name} is not connected")
        token = await self._minter.mint(
            sub=target.id,
            cnf=thumbprint,
            aud=source.id,
            op=op,
            res=resource,
            ttl=self._ttl,
            why=f"delegation: {target.name} fetches {resource} from {source.name} for {workload}",
        )
        task = await self._tasks.issue(
            node=target.name,
            kind=kind,
            resource=resource,
            workload=workload,
            source=source.name,
            ttl=self._ttl + 60,
        )
        await self._audit.record(
            "delegation.issued",
            request_id=task.request_id,
            target=target.name,
            source=source.name,
            op=op,
            res=resource,
            workload=workload,
            ttl=self._ttl,
        )
        message = gateway_pb2.GatewayMessage(
            sent_at=self._clock(),
            tasks=[
                gateway_pb2.Task(
                    request_id=task.request_id,
                    kind=kind,
                    resource=resource,
                    source_address=source.address,
                    source_id=source.id,
                    token=token,
                    expires_at=self._clock() + self._ttl,
                )
            ],
        )
        if not self._send(target.name, message):
            raise DelegationRefused(f"{target.name} has no open report stream")
        return task
