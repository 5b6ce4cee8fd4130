"""Bounded refusals (issue 10 item 5): refused unauthenticated requests are rate
limited and audited in aggregate; reading an application's events costs what is
read, not the whole log."""

from __future__ import annotations

from typing import Any

import grpc

from orchestrator.store import keys
from protos import control_pb2, gateway_pb2

from .conftest import Cluster
from .test_compromised_node import app


def _join_code(stub: Any, i: int) -> grpc.StatusCode:
    request = gateway_pb2.JoinRequest(
        join_token=f"CJ1.garbage-{i}", name="flood", ips=["127.0.0.99"], address="127.0.0.99:1"
    )
    try:
        stub.Join(request, timeout=10)
    except grpc.RpcError as exc:
        return exc.code()  # type: ignore[no-any-return]
    return grpc.StatusCode.OK


def test_a_join_flood_is_rate_limited_and_audited_in_aggregate(cluster: Cluster) -> None:
    # Before: every refused join appended its own audit entry (4,000 in seven seconds).
    stub = cluster.orch.join_stub()
    before = len(cluster.audit())
    codes = [_join_code(stub, i) for i in range(300)]
    assert grpc.StatusCode.OK not in codes
    denied = codes.count(grpc.StatusCode.PERMISSION_DENIED)
    limited = codes.count(grpc.StatusCode.RESOURCE_EXHAUSTED)
    assert denied + limited == 300 and 20 <= denied < 100 and limited > 200
    during = [e for e in cluster.audit()[before:] if e["event"] == "join.refused"]
    assert len(during) == 1 and during[0]["count"] == 1  # the first, at once
    cluster.orch.run(cluster.orch.orch.gateway.join_refusals.flush())  # the window ends
    refused = [e for e in cluster.audit()[before:] if e["event"] == "join.refused"]
    assert len(refused) == 2
    assert sum(e["count"] for e in refused) == 300
    assert refused[1]["source"] == "127.0.0.1" and refused[1]["reasons"]["rate limited"] == limited
    nodes = cluster.admin().ListNodes(control_pb2.ListNodesRequest()).nodes
    assert "flood" not in [n.name for n in nodes]


class _CountingStore:
    """The orchestrator's real store, counting the audit entries it hands out."""

    def __init__(self, store: Any) -> None:
        self._store = store
        self.audit_entries_read = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def range(self, prefix: str, **kw: Any) -> Any:
        result = await self._store.range(prefix, **kw)
        if prefix.startswith(keys.AUDIT) or prefix.startswith("/audit-app/"):
            self.audit_entries_read += len(result)
        return result


def test_reading_an_applications_events_does_not_load_the_whole_log(cluster: Cluster) -> None:
    # Before: GetApp loaded every audit entry to show an application's last twenty.
    cluster.admin().Apply(app("shop", replicas=1, tenant="acme"))
    audit = cluster.orch.orch.audit

    async def noise() -> None:
        for i in range(1500):
            await audit.record("noise", n=i)

    cluster.orch.run(noise())
    counting = _CountingStore(audit._store)
    audit._store = counting  # type: ignore[assignment]
    try:
        detail = cluster.admin().GetApp(control_pb2.AppRef(tenant="acme", name="shop"))
        tail = list(cluster.admin().AuditTail(control_pb2.AuditRequest(limit=5)))
    finally:
        audit._store = counting._store
    assert any("app.applied" in line for line in detail.events)
    assert any("acme.shop.web.0" in line for line in detail.events)
    assert len(tail) == 5
    assert counting.audit_entries_read <= 20 + 5
