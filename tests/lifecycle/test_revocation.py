"""Revocation in seconds: refused by the orchestrator and by every node within 2 s of
the command, the node marked revoked, its workloads placed elsewhere, the CRL written."""

from __future__ import annotations

import time
from pathlib import Path

import grpc
import pytest
from cryptography import x509

from pki.authority import Authority
from protos import control_pb2, gateway_pb2, node_pb2, topology_pb2
from protos.wire.errors import NodeCallError
from protos.wire.nodeclient import NodeClient
from tests.security.conftest import Cluster
from tests.waiting import wait_for

from .conftest import audit_events, lifecycle_of

DEADLINE = 2.0


def node1_serial(c: Cluster) -> int:
    return x509.load_pem_x509_certificate(c.node_files("node-1")[0].read_bytes()).serial_number


def orchestrator_refuses_node1(c: Cluster) -> bool:
    try:
        c.as_node("node-1").Complete(gateway_pb2.TaskResult(request_id="probe"), timeout=2)
    except grpc.RpcError as exc:
        return exc.code() == grpc.StatusCode.UNAUTHENTICATED
    return False


def node2_refuses_node1(c: Cluster) -> bool:
    """node-1 calls node-2 with a valid token minted for it: refused once node-2 holds
    the new deny list."""
    orch = c.orch
    source = orch.orch.state.node("node-2")
    target = orch.orch.state.node("node-1")
    assert source is not None and target is not None
    crt = x509.load_pem_x509_certificate(c.node_files("node-1")[0].read_bytes())
    from pki.certs import thumbprint

    token = str(
        orch.run(
            orch.orch.reconciler.caller._minter.mint(
                sub=target.id,
                cnf=thumbprint(crt),
                aud=source.id,
                op="node.info",
                res="*",
                ttl=10.0,
                why="revocation probe",
                audit=False,
            )
        )
    )
    try:
        with NodeClient(
            source.address, credentials=c.node_credentials("node-1"), expect=source.id
        ) as client:
            client.call("node.info", node_pb2.NodeInfoRequest(), token, timeout=2)
    except NodeCallError as exc:
        return exc.code == grpc.StatusCode.UNAUTHENTICATED and "revoked" in exc.details
    return False


def app(replicas: int) -> control_pb2.ApplyRequest:
    return control_pb2.ApplyRequest(
        app=topology_pb2.Application(
            name="shop",
            services=[
                topology_pb2.Service(
                    name="web", image="local/busybox:1", command=["sleep", "600"], replicas=replicas
                )
            ],
        )
    )


def test_node_revoke_is_refused_everywhere_within_two_seconds(cluster: Cluster) -> None:
    admin = cluster.admin()
    admin.Apply(app(4))
    wait_for(
        lambda: sum(w.state == "running" for w in cluster.workloads()) == 4,
        what="four running instances",
    )
    assert not orchestrator_refuses_node1(cluster)
    assert not node2_refuses_node1(cluster)
    serial = node1_serial(cluster)

    start = time.monotonic()
    record = admin.RevokeNode(control_pb2.RevokeNodeRequest(name="node-1"))
    assert record.state == "revoked"
    wait_for(lambda: orchestrator_refuses_node1(cluster), timeout=DEADLINE, what="orchestrator")
    wait_for(lambda: node2_refuses_node1(cluster), timeout=DEADLINE, what="node-2")
    assert time.monotonic() - start <= DEADLINE

    # The CRL for outside tools names the serial.
    crl = x509.load_pem_x509_crl((cluster.orch.authority.directory / "crl.pem").read_bytes())
    assert crl.get_revoked_certificate_by_serial_number(serial) is not None
    # Its workloads run elsewhere.
    wait_for(
        lambda: [w.node for w in cluster.workloads() if w.state == "running"] == ["node-2"] * 4,
        what="every instance on node-2",
    )
    assert [e["node"] for e in audit_events(cluster, "node.revoked")] == ["node-1"]


def test_revoke_with_an_unknown_reason_changes_nothing(cluster: Cluster) -> None:
    with pytest.raises(grpc.RpcError) as err:
        cluster.admin().RevokeNode(control_pb2.RevokeNodeRequest(name="node-1", reason="bored"))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert cluster.orch.authority.revoked_serials() == set()
    assert not orchestrator_refuses_node1(cluster)


def test_only_an_admin_may_revoke(cluster: Cluster) -> None:
    viewer = cluster.orch.control("val", "viewer")
    with pytest.raises(grpc.RpcError) as err:
        viewer.RevokeNode(control_pb2.RevokeNodeRequest(name="node-1"))
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert cluster.orch.authority.revoked_serials() == set()
    node = cluster.orch.orch.state.node("node-1")
    assert node is not None and node.state == "ready"


def test_unknown_node_is_not_found(cluster: Cluster) -> None:
    with pytest.raises(grpc.RpcError) as err:
        cluster.admin().RevokeNode(control_pb2.RevokeNodeRequest(name="node-9"))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_file_level_pki_revoke_reaches_the_running_cluster(cluster: Cluster) -> None:
    """`capstan pki revoke` in another process only changes the PKI state file."""
    serial = node1_serial(cluster)
    start = time.monotonic()
    Authority.open(Path(cluster.orch.authority.directory)).revoke(serial)
    wait_for(lambda: orchestrator_refuses_node1(cluster), timeout=DEADLINE, what="orchestrator")
    wait_for(lambda: node2_refuses_node1(cluster), timeout=DEADLINE, what="node-2")
    assert time.monotonic() - start <= DEADLINE
    wait_for(
        lambda: (n := cluster.orch.orch.state.node("node-1")) is not None and n.state == "revoked",
        timeout=DEADLINE,
        what="node-1 marked revoked",
    )
    assert lifecycle_of(cluster).revoker.revoked() == {serial}
