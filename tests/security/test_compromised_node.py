"""A compromised node holds a valid certificate of the cluster. Every attempt below
is refused with the exact status, changes nothing, and (where the orchestrator sees
it) leaves an audit event naming the offending node."""

from __future__ import annotations

import time

import grpc
import pytest

from pki.tokenkeys import TokenKeyStore
from pki.tokens import mint, request_digest
from protos import control_pb2, gateway_pb2, node_pb2, ops, topology_pb2
from tests.waiting import wait_for

from .conftest import Cluster

UNAUTH = grpc.StatusCode.UNAUTHENTICATED
DENIED = grpc.StatusCode.PERMISSION_DENIED


def refused(fn: object, *args: object, **kw: object) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as err:
        result = fn(*args, **kw)  # type: ignore[operator]
        if hasattr(result, "__iter__") and not isinstance(result, (bytes, str)):
            list(result)
    return err.value


def app(name: str = "shop", replicas: int = 2, tenant: str = "") -> control_pb2.ApplyRequest:
    return control_pb2.ApplyRequest(
        app=topology_pb2.Application(
            name=name,
            tenant=tenant,
            services=[
                topology_pb2.Service(
                    name="web", image="local/busybox:1", command=["sleep", "600"], replicas=replicas
                )
            ],
        )
    )


def running(c: Cluster, n: int) -> bool:
    return sum(w.state == "running" for w in c.workloads()) == n


def spec(name: str = "evil") -> node_pb2.ContainerSpec:
    return node_pb2.ContainerSpec(
        name=name, workload_id="wl-evil", image="local/busybox:1", command=["true"]
    )


# -- node to node, without the orchestrator's leave -----------------------------------


def test_node_calls_another_node_without_a_token(cluster: Cluster) -> None:
    err = refused(cluster.node_stub("node-1", "node-2").CreateContainer, spec())
    assert err.code() == UNAUTH
    assert cluster.nodes["node-2"].agent.runtime.list() == []
    events = cluster.nodes["node-2"].agent.audit.entries()
    assert events[-1]["event"] == "refused" and events[-1]["caller"].endswith("/node/node-1")


def test_node_uses_a_token_minted_for_someone_else(cluster: Cluster) -> None:
    # A genuine token for node-2, but minted for the orchestrator's certificate:
    # node-1 stole it (e.g. from a log) and presents it with its own certificate.
    keys = TokenKeyStore.open(cluster.orch.orch.config.pki_dir / "token-keys")
    node2 = cluster.nodes["node-2"].node_id
    s = spec()
    token = mint(
        keys.signer(),
        iss=cluster.orch.orch.identity,
        sub=cluster.orch.orch.identity,
        aud=node2,
        op="container.create",
        res=s.name,
        cnf="A" * 43,
        req=request_digest(ops.request_fields(s)),
    )
    err = refused(
        cluster.node_stub("node-1", "node-2").CreateContainer,
        s,
        metadata=(("authorization", f"Bearer {token}"),),
    )
    assert err.code() == DENIED and err.details() == "not for this caller"
    assert cluster.nodes["node-2"].agent.runtime.list() == []


def _delegation_token(c: Cluster, ttl: float = 10, now: float | None = None) -> tuple[str, str]:
    """A real delegation (node-1 may export the image from node-2), minted the way the
    orchestrator mints them, bound to node-1's current certificate."""
    from node.join import load_joined
    from pki.certs import load_pem_chain, thumbprint

    keys = TokenKeyStore.open(c.orch.orch.config.pki_dir / "token-keys")
    joined = load_joined(c.root / "node-1")
    assert joined is not None
    cert = load_pem_chain(joined.files.cert.read_bytes())[0]
    token = mint(
        keys.signer(),
        iss=c.orch.orch.identity,
        sub=c.nodes["node-1"].node_id,
        aud=c.nodes["node-2"].node_id,
        op="image.export",
        res="local/busybox:1",
        cnf=thumbprint(cert),
        ttl=ttl,
        now=time.time() if now is None else now,
    )
    return token, "local/busybox:1"


def test_node_replays_its_used_delegation_token(cluster: Cluster) -> None:
    token, ref = _delegation_token(cluster)
    stub = cluster.node_stub("node-1", "node-2")
    meta = (("authorization", f"Bearer {token}"),)
    assert b"".join(c.data for c in stub.ExportImage(node_pb2.ImageRef(ref=ref), metadata=meta))
    err = refused(stub.ExportImage, node_pb2.ImageRef(ref=ref), metadata=meta)
    assert err.code() == UNAUTH and err.details() == "replayed"


def test_node_stretches_its_delegation_token_to_another_operation(cluster: Cluster) -> None:
    token, _ = _delegation_token(cluster)
    meta = (("authorization", f"Bearer {token}"),)
    err = refused(
        cluster.node_stub("node-1", "node-2").ExportVolume,
        node_pb2.VolumeRef(name="data"),
        metadata=meta,
    )
    assert err.code() == DENIED and err.details() == "wrong operation"


def test_node_uses_its_expired_delegation_token(cluster: Cluster) -> None:
    # Minted two minutes ago with a 10 s life: expired by the node's own clock.
    token, ref = _delegation_token(cluster, now=time.time() - 120)
    meta = (("authorization", f"Bearer {token}"),)
    err = refused(
        cluster.node_stub("node-1", "node-2").ExportImage, node_pb2.ImageRef(ref=ref), metadata=meta
    )
    assert err.code() == UNAUTH and err.details() == "expired"
    events = cluster.nodes["node-2"].agent.audit.entries()
    assert events[-1]["event"] == "refused" and events[-1]["caller"].endswith("/node/node-1")


# -- speaking in another node's name ------------------------------------------------------


def test_node_reports_status_for_another_nodes_workload(cluster: Cluster) -> None:
    cluster.admin().Apply(app())
    wait_for(lambda: running(cluster, 2), what="2 running")
    theirs = next(w for w in cluster.workloads() if w.node == "node-2")
    before = {w.id: (w.state, w.node, w.restarts) for w in cluster.workloads()}
    forged = gateway_pb2.NodeStatus(
        sent_at=time.time(),
        full=True,
        containers=[
            node_pb2.ContainerStatus(name=theirs.container, workload_id=theirs.id, state="exited")
        ],
    )
    err = refused(cluster.as_node("node-1").Report, iter([forged]))
    assert err.code() == DENIED
    after = {w.id: (w.state, w.node, w.restarts) for w in cluster.workloads()}
    assert after == before
    assert any(
        e["event"] == "report.refused"
        and e.get("node") == "node-1"
        and theirs.id in e.get("workloads", [])
        for e in cluster.audit()
    )


def test_node_completes_a_task_it_was_not_given(cluster: Cluster) -> None:
    from orchestrator.tasks import TaskBook

    book = TaskBook(cluster.orch.orch.store, time.time)
    task = cluster.orch.run(
        book.issue(
            node="node-2", kind="image.fetch", resource="x:1", workload="w", source="node-1", ttl=60
        )
    )
    err = refused(
        cluster.as_node("node-1").Complete,
        gateway_pb2.TaskResult(request_id=task.request_id, ok=True),
    )  # type: ignore[attr-defined]
    assert err.code() == DENIED
    assert [t.request_id for t in cluster.orch.run(book.outstanding())] == [task.request_id]  # type: ignore[attr-defined, union-attr]
    assert any(e["event"] == "complete.refused" and e["node"] == "node-1" for e in cluster.audit())
    # The rightful node completes it once; a second completion is refused.
    cluster.as_node("node-2").Complete(gateway_pb2.TaskResult(request_id=task.request_id, ok=True))  # type: ignore[attr-defined]
    err = refused(
        cluster.as_node("node-2").Complete,
        gateway_pb2.TaskResult(request_id=task.request_id, ok=True),
    )  # type: ignore[attr-defined]
    assert err.code() == DENIED
    assert sum(e["event"] == "task.completed" for e in cluster.audit()) == 1


def test_node_completes_an_unknown_request(cluster: Cluster) -> None:
    err = refused(
        cluster.as_node("node-1").Complete, gateway_pb2.TaskResult(request_id="f" * 32, ok=True)
    )
    assert err.code() == DENIED
    assert any(e["event"] == "complete.refused" and e["node"] == "node-1" for e in cluster.audit())


def test_node_watches_another_nodes_assignments(cluster: Cluster) -> None:
    cluster.admin().Apply(app())
    err = refused(cluster.as_node("node-1").Watch, gateway_pb2.WatchRequest(node="node-2"))
    assert err.code() == DENIED
    assert any(
        e["event"] == "watch.refused" and e["node"] == "node-1" and e["asked_for"] == "node-2"
        for e in cluster.audit()
    )


def test_node_sees_only_its_own_assignments(cluster: Cluster) -> None:
    cluster.admin().Apply(app())
    wait_for(lambda: all(w.node for w in cluster.workloads()), what="placement")
    stream = cluster.as_node("node-1").Watch(gateway_pb2.WatchRequest(node="node-1"))
    first = next(iter(stream))
    stream.cancel()
    mine = {w.id for w in cluster.workloads() if w.node == "node-1"}
    assert {a.workload_id for a in first.assignments} == mine


def test_node_rejoins_as_another_node(cluster: Cluster) -> None:
    # node-1 obtains some join token (unbound) and asks to become node-2.
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    token = cluster.admin().CreateJoinToken(control_pb2.JoinTokenRequest()).token
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "node-2")]))
        .sign(key, hashes.SHA256())
    )
    request = gateway_pb2.JoinRequest(
        join_token=token,
        csr_pem=csr.public_bytes(serialization.Encoding.PEM),
        name="node-2",
        ips=["127.0.0.21"],
        address="127.0.0.21:7999",
    )
    before = cluster.admin().ListNodes(control_pb2.ListNodesRequest()).nodes
    err = refused(cluster.orch.join_stub().Join, request)
    assert err.code() == DENIED
    after = cluster.admin().ListNodes(control_pb2.ListNodesRequest()).nodes
    assert [(n.name, n.id, n.address, n.cert_serial) for n in after] == [
        (n.name, n.id, n.address, n.cert_serial) for n in before
    ]
    assert any(e["event"] == "join.refused" and e.get("node") == "node-2" for e in cluster.audit())


def test_node_certificate_cannot_drive_the_control_api(cluster: Cluster) -> None:
    from protos import control_pb2_grpc

    channel = grpc.secure_channel(cluster.orch.target, cluster.node_credentials("node-1"))
    stub = control_pb2_grpc.ControlServiceStub(channel)
    err = refused(stub.Apply, app())
    assert err.code() == DENIED
    assert cluster.workloads() == []
    assert any(
        e["event"] == "control.refused" and "node/node-1" in e["reason"] for e in cluster.audit()
    )


def test_tenant_cannot_read_another_tenants_logs(cluster: Cluster) -> None:
    cluster.admin().Apply(app(tenant="globex"))
    wait_for(lambda: running(cluster, 2), what="globex running")
    acme = cluster.orch.control("mallory", "tenant:acme")
    err = refused(
        acme.Logs, control_pb2.AppLogsRequest(tenant="globex", app="shop", instance="web.0")
    )
    assert err.code() == DENIED
    minted = [
        e for e in cluster.audit() if e["event"] == "token.minted" and e["op"] == "container.logs"
    ]
    assert minted == []
