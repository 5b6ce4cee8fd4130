"""ControlService over real mTLS: roles, validation, idempotent apply, join tokens."""

from __future__ import annotations

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from protos import control_pb2, gateway_pb2, topology_pb2

from .conftest import Running


def app(
    replicas: int = 2, image: str = "local/busybox:1", tenant: str = ""
) -> topology_pb2.Application:
    return topology_pb2.Application(
        name="shop",
        tenant=tenant,
        services=[
            topology_pb2.Service(
                name="web",
                image=image,
                command=["sleep", "60"],
                replicas=replicas,
                resources=topology_pb2.Resources(cpu=0.1, memory=32 * 1024 * 1024),
            )
        ],
    )


def code_of(fn: object, *args: object) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as err:
        fn(*args)  # type: ignore[operator]
    return err.value.code()  # type: ignore[no-any-return]


def test_admin_applies_and_apply_is_idempotent(orchestrator: Running) -> None:
    stub = orchestrator.control()
    first = stub.Apply(control_pb2.ApplyRequest(app=app()))
    assert first.tenant == "default" and first.generation == 1
    assert [c.action for c in first.changes] == ["create"]
    again = stub.Apply(control_pb2.ApplyRequest(app=app()))
    assert again.generation == 1 and [c.action for c in again.changes] == ["unchanged"]
    workloads = stub.ListWorkloads(control_pb2.WorkloadFilter(app="shop")).workloads
    assert sorted(w.id for w in workloads) == ["default.shop.web.0", "default.shop.web.1"]
    scaled = stub.Apply(control_pb2.ApplyRequest(app=app(replicas=3)))
    assert scaled.generation == 2 and [c.action for c in scaled.changes] == ["scale"]
    assert len(stub.ListWorkloads(control_pb2.WorkloadFilter(app="shop")).workloads) == 3


def test_viewer_cannot_apply_and_nothing_is_written(orchestrator: Running) -> None:
    viewer = orchestrator.control("vera", "viewer")
    assert (
        code_of(viewer.Apply, control_pb2.ApplyRequest(app=app()))
        == grpc.StatusCode.PERMISSION_DENIED
    )
    assert viewer.ListApps(control_pb2.ListAppsRequest()).apps == []
    events = orchestrator.run(orchestrator.orch.audit.entries())
    assert any(e["event"] == "control.refused" and e["method"] == "Apply" for e in events)  # type: ignore[union-attr]


def test_tenant_sees_and_changes_only_its_own_tenant(orchestrator: Running) -> None:
    admin = orchestrator.control()
    admin.Apply(control_pb2.ApplyRequest(app=app(tenant="globex")))
    acme = orchestrator.control("alice", "tenant:acme")
    resp = acme.Apply(control_pb2.ApplyRequest(app=app()))
    assert resp.tenant == "acme"
    assert (
        code_of(acme.Apply, control_pb2.ApplyRequest(app=app(tenant="globex")))
        == grpc.StatusCode.PERMISSION_DENIED
    )
    assert [a.tenant for a in acme.ListApps(control_pb2.ListAppsRequest()).apps] == ["acme"]
    assert {w.tenant for w in acme.ListWorkloads(control_pb2.WorkloadFilter()).workloads} == {
        "acme"
    }
    assert (
        code_of(acme.GetApp, control_pb2.AppRef(tenant="globex", name="shop"))
        == grpc.StatusCode.PERMISSION_DENIED
    )
    assert (
        code_of(acme.DeleteApp, control_pb2.AppRef(tenant="globex", name="shop"))
        == grpc.StatusCode.PERMISSION_DENIED
    )
    assert code_of(acme.Cordon, control_pb2.NodeRef(name="n1")) == grpc.StatusCode.PERMISSION_DENIED


def test_invalid_application_is_refused_whole(orchestrator: Running) -> None:
    stub = orchestrator.control()
    bad = app(image="NOT a valid ref!")
    with pytest.raises(grpc.RpcError) as err:
        stub.Apply(control_pb2.ApplyRequest(app=bad))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "services.web.image" in (err.value.details() or "")
    assert stub.ListApps(control_pb2.ListAppsRequest()).apps == []
    assert stub.ListWorkloads(control_pb2.WorkloadFilter()).workloads == []


def test_node_certificate_cannot_use_the_control_api(orchestrator: Running) -> None:
    from protos.wire.channel import client_credentials

    issued = orchestrator.authority.issue("node", "n1", ips=["127.0.0.1"])
    assert issued.key_pem is not None
    creds = client_credentials(
        issued.chain_pem, issued.key_pem, orchestrator.authority.trust_bundle()
    )
    from protos import control_pb2_grpc

    stub = control_pb2_grpc.ControlServiceStub(grpc.secure_channel(orchestrator.target, creds))
    assert (
        code_of(stub.ListApps, control_pb2.ListAppsRequest()) == grpc.StatusCode.PERMISSION_DENIED
    )


def _csr() -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "admin")]))
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM)


def test_join_token_works_once(orchestrator: Running) -> None:
    token = orchestrator.control().CreateJoinToken(control_pb2.JoinTokenRequest(name="n1")).token
    join = orchestrator.join_stub()
    request = gateway_pb2.JoinRequest(
        join_token=token,
        csr_pem=_csr(),
        name="ignored",
        ips=["127.0.0.5"],
        address="127.0.0.5:7001",
        cpus=2,
        memory=1 << 30,
    )
    resp = join.Join(request)
    assert resp.node_id == "spiffe://orch.test/node/n1" and resp.name == "n1"
    cert = x509.load_pem_x509_certificate(resp.certificate_chain)
    assert cert.extensions.get_extension_for_class(
        x509.SubjectAlternativeName
    ).value.get_values_for_type(x509.UniformResourceIdentifier) == ["spiffe://orch.test/node/n1"]
    assert code_of(join.Join, request) == grpc.StatusCode.PERMISSION_DENIED
    nodes = orchestrator.control().ListNodes(control_pb2.ListNodesRequest()).nodes
    assert [n.name for n in nodes] == ["n1"]


def test_garbage_join_token_is_refused_and_audited(orchestrator: Running) -> None:
    join = orchestrator.join_stub()
    for token in ("", "garbage", "CJ1." + "A" * 43 + ".wrongpin"):
        request = gateway_pb2.JoinRequest(
            join_token=token, csr_pem=_csr(), name="n9", ips=["127.0.0.9"], address="127.0.0.9:1"
        )
        assert code_of(join.Join, request) == grpc.StatusCode.PERMISSION_DENIED
    assert orchestrator.control().ListNodes(control_pb2.ListNodesRequest()).nodes == []
    # Audited per source in aggregate: the first at once, the rest when the window ends.
    orchestrator.run(orchestrator.orch.gateway.join_refusals.flush())
    events = orchestrator.run(orchestrator.orch.audit.entries())
    refused = [e for e in events if e["event"] == "join.refused"]  # type: ignore[index]
    assert sum(e["count"] for e in refused) == 3 and len(refused) == 2  # type: ignore[index]


def test_join_refuses_node_sans_of_the_orchestrator(orchestrator: Running) -> None:
    token = orchestrator.control().CreateJoinToken(control_pb2.JoinTokenRequest()).token
    request = gateway_pb2.JoinRequest(
        join_token=token, csr_pem=_csr(), name="n2", ips=["127.0.0.1"], address="127.0.0.1:7001"
    )
    assert code_of(orchestrator.join_stub().Join, request) == grpc.StatusCode.INVALID_ARGUMENT
    assert orchestrator.control().ListNodes(control_pb2.ListNodesRequest()).nodes == []
