"""Images are pinned at apply from the admin's word (SeedImage) or the file's digest,
never from what a node reports (issue 10, item 2)."""

from __future__ import annotations

import grpc

from protos import control_pb2, gateway_pb2

from .conftest import Running
from .test_control_api import _csr, app, code_of

DIGEST = "sha256:" + "4c" * 32
PINNED = f"local/busybox:1@{DIGEST}"


def _join(orchestrator: Running, name: str = "n1") -> None:
    token = orchestrator.control().CreateJoinToken(control_pb2.JoinTokenRequest(name=name)).token
    orchestrator.join_stub().Join(
        gateway_pb2.JoinRequest(
            join_token=token,
            csr_pem=_csr(),
            ips=["127.0.0.5"],
            address="127.0.0.5:7001",
            cpus=2,
            memory=1 << 30,
        )
    )


def _holders(orchestrator: Running) -> set[str]:
    catalog = orchestrator.orch.reconciler.images
    return orchestrator.run(catalog.holders(PINNED))  # type: ignore[return-value]


def test_only_an_admin_seeds_an_image_and_only_a_pinned_one(orchestrator: Running) -> None:
    _join(orchestrator)
    tenant = orchestrator.control("alice", "tenant:acme")
    request = control_pb2.SeedImageRequest(node="n1", image=PINNED)
    assert code_of(tenant.SeedImage, request) == grpc.StatusCode.PERMISSION_DENIED
    admin = orchestrator.control()
    unknown = control_pb2.SeedImageRequest(node="n9", image=PINNED)
    assert code_of(admin.SeedImage, unknown) == grpc.StatusCode.NOT_FOUND
    unpinned = control_pb2.SeedImageRequest(node="n1", image="local/busybox:1")
    assert code_of(admin.SeedImage, unpinned) == grpc.StatusCode.INVALID_ARGUMENT
    assert _holders(orchestrator) == set()
    assert orchestrator.run(orchestrator.orch.reconciler.images.pin_of("local/busybox:1")) is None

    reply = admin.SeedImage(request)
    assert reply.image == PINNED and reply.node == "n1"
    assert _holders(orchestrator) == {"n1"}


def test_apply_pins_the_image_to_the_admins_digest(orchestrator: Running) -> None:
    _join(orchestrator)
    tenant = orchestrator.control("alice", "tenant:acme")
    # Before any seed: an unpinned image stays unpinned (never copied between nodes).
    tenant.Apply(control_pb2.ApplyRequest(app=app(replicas=1, tenant="acme")))
    (w,) = tenant.ListWorkloads(control_pb2.WorkloadFilter(tenant="acme")).workloads
    assert w.image == "local/busybox:1"
    orchestrator.control().SeedImage(control_pb2.SeedImageRequest(node="n1", image=PINNED))
    reply = tenant.Apply(control_pb2.ApplyRequest(app=app(replicas=1, tenant="acme")))
    assert [c.action for c in reply.changes] == ["update"]  # now pinned: a new spec
    (w,) = tenant.ListWorkloads(control_pb2.WorkloadFilter(tenant="acme")).workloads
    assert w.image == PINNED
    detail = tenant.GetApp(control_pb2.AppRef(tenant="acme", name="shop"))
    assert detail.record.app.services[0].image == PINNED
    again = tenant.Apply(control_pb2.ApplyRequest(app=app(replicas=1, tenant="acme")))
    assert [c.action for c in again.changes] == ["unchanged"]
    # A digest in the file is the file's: kept as written (in canonical form).
    mine = "sha256:" + "9d" * 32
    pinned_in_file = app(replicas=1, tenant="acme", image=f"local/busybox:1@{mine}")
    tenant.Apply(control_pb2.ApplyRequest(app=pinned_in_file))
    (w,) = tenant.ListWorkloads(control_pb2.WorkloadFilter(tenant="acme")).workloads
    assert w.image == f"local/busybox:1@{mine}"
