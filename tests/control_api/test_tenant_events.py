"""An application's events are its tenant's alone (issue 10, item 7)."""

from __future__ import annotations

from protos import control_pb2

from .conftest import Running
from .test_control_api import app


def test_same_named_app_of_another_tenant_does_not_leak_its_events(
    orchestrator: Running,
) -> None:
    acme = orchestrator.control("alice", "tenant:acme")
    globex = orchestrator.control("gus", "tenant:globex")
    acme.Apply(control_pb2.ApplyRequest(app=app(replicas=0, tenant="acme")))
    globex.Apply(control_pb2.ApplyRequest(app=app(replicas=0, tenant="globex")))
    acme.DeleteApp(control_pb2.AppRef(tenant="acme", name="shop"))
    # Each event line starts with its UTC time: compare what follows it.
    events = [
        e.split(" ", 1)[1]
        for e in globex.GetApp(control_pb2.AppRef(tenant="globex", name="shop")).events
    ]
    # Its own apply only: not acme's apply, not acme's delete.
    assert events == ["app.applied"]
    admin = orchestrator.control()
    everything = orchestrator.run(orchestrator.orch.audit.entries())
    assert sum(e.get("app") == "shop" for e in everything) >= 3  # type: ignore[union-attr]
    assert [
        e.split(" ", 1)[1]
        for e in admin.GetApp(control_pb2.AppRef(tenant="globex", name="shop")).events
    ] == ["app.applied"]
