"""Node certificate renewal over the authenticated channel, on a running cluster."""

from __future__ import annotations

import socket
import ssl
import time

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from pki.certs import dns_names, identity_of, ip_addresses, thumbprint
from protos import control_pb2, gateway_pb2, gateway_pb2_grpc
from tests.security.conftest import Cluster
from tests.waiting import wait_for

from .conftest import NODE_TTL, Load, audit_events, lifecycle_of


def served_certificate(address: str, c: Cluster, name: str) -> x509.Certificate:
    """The leaf a node serves at ``address`` (a TLS handshake of our own)."""
    crt, key, ca = c.node_files(name)
    host, _, port = address.rpartition(":")
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca))
    ctx.load_cert_chain(str(crt), str(key))
    ctx.set_alpn_protocols(["h2"])
    with socket.create_connection((host, int(port)), timeout=5) as raw, ctx.wrap_socket(
        raw, server_hostname=host
    ) as tls:
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


def csr(names: list[str]) -> tuple[ec.EllipticCurvePrivateKey, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "node-2")])
    )
    builder = builder.add_extension(
        x509.SubjectAlternativeName(
            [x509.UniformResourceIdentifier("spiffe://orch.test/node/node-2")]
            + [x509.DNSName(n) for n in names]
        ),
        critical=False,
    )
    req = builder.sign(key, hashes.SHA256())
    return key, req.public_bytes(serialization.Encoding.PEM)


def test_node_renews_at_two_thirds_of_a_60s_certificate_without_a_failed_call(
    cluster: Cluster,
) -> None:
    node = cluster.nodes["node-1"]
    renewer = node.renewer
    assert renewer is not None
    leaf = x509.load_pem_x509_certificate(cluster.node_files("node-1")[0].read_bytes())
    issued = leaf.not_valid_before_utc.timestamp() + 300  # notBefore is backdated 5 min
    life = leaf.not_valid_after_utc.timestamp() - issued
    assert life == pytest.approx(NODE_TTL, abs=2)
    assert issued + life * 0.6 <= renewer.renew_at <= issued + life * 0.72
    # Before its point: nothing happens (an injected clock, not a wait).
    assert renewer.check(now=renewer.renew_at - 1) is None
    old_serial = leaf.serial_number

    load = Load(cluster).start()
    try:
        load.more(10)
        renewed = renewer.check(now=renewer.renew_at)
        assert renewed is not None and renewed.serial != old_serial
        record = cluster.orch.orch.state.node("node-1")
        assert record is not None and record.cert_serial == f"{renewed.serial:X}"
        new_leaf = x509.load_pem_x509_certificate(cluster.node_files("node-1")[0].read_bytes())
        assert new_leaf.serial_number == renewed.serial
        # The server serves it (dynamic credentials) and the report stream uses it.
        wait_for(
            lambda: served_certificate(node.listening, cluster, "node-1").serial_number
            == renewed.serial,
            timeout=5,
            what="the renewed certificate served",
        )
        tracker = cluster.orch.orch.reconciler.tracker
        wait_for(
            lambda: tracker.thumbprint("node-1") == thumbprint(new_leaf),
            timeout=5,
            what="the report stream reconnected with the new certificate",
        )
        load.more(20)
    finally:
        load.stop()
    assert load.calls > 20
    assert load.failures == []
    assert [e["name"] for e in audit_events(cluster, "cert.renewed")] == ["node-1"]


def test_renewal_signs_the_recorded_identity_and_sans_never_the_csrs(cluster: Cluster) -> None:
    before = cluster.orch.orch.state.node("node-1")
    assert before is not None
    key, pem = csr(["evil.example", "orchestrator"])
    response = cluster.as_node("node-1").Renew(gateway_pb2.RenewRequest(csr_pem=pem))
    leaf = x509.load_pem_x509_certificate(response.certificate_chain)
    assert identity_of(leaf).uri == before.id  # node-1, not the CSR's node-2
    # What the node was recorded with, plus its identity name (the CA's, never the CSR's).
    assert dns_names(leaf) == [*before.dns, identity_of(leaf).dns_name]
    assert [str(i) for i in ip_addresses(leaf)] == list(before.ips)
    assert leaf.public_key() == key.public_key()


def test_garbage_csr_is_refused_and_nothing_is_recorded(cluster: Cluster) -> None:
    before = cluster.orch.orch.state.node("node-1")
    issued = len(cluster.orch.authority.list())
    with pytest.raises(grpc.RpcError) as err:
        cluster.as_node("node-1").Renew(gateway_pb2.RenewRequest(csr_pem=b"not a csr"))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "csr_pem" in (err.value.details() or "")
    assert cluster.orch.orch.state.node("node-1") == before
    assert len(cluster.orch.authority.list()) == issued


def test_a_user_certificate_cannot_renew(cluster: Cluster) -> None:
    issued = len(cluster.orch.authority.list())
    _, pem = csr([])
    channel = grpc.secure_channel(cluster.orch.target, cluster.orch.user("eve", "admin"))
    from protos import gateway_pb2_grpc

    with pytest.raises(grpc.RpcError) as err:
        gateway_pb2_grpc.NodeGatewayStub(channel).Renew(gateway_pb2.RenewRequest(csr_pem=pem))
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert len(cluster.orch.authority.list()) == issued + 1  # only eve's own certificate


def test_a_revoked_node_cannot_renew(cluster: Cluster) -> None:
    cluster.admin().RevokeNode(control_pb2.RevokeNodeRequest(name="node-1"))
    issued = len(cluster.orch.authority.list())
    _, pem = csr([])
    with pytest.raises(grpc.RpcError) as err:
        cluster.as_node("node-1").Renew(gateway_pb2.RenewRequest(csr_pem=pem))
    assert err.value.code() in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED)
    assert len(cluster.orch.authority.list()) == issued


def test_orchestrator_renews_its_own_certificate_while_serving(cluster: Cluster) -> None:
    lc = lifecycle_of(cluster)
    old = lc.own.issued.serial
    load = Load(cluster).start()
    try:
        load.more(10)
        cluster.orch.run(lc.step(now=lc.own.renew_at + 1))
        assert lc.own.issued.serial != old
        load.more(20)
        # New connections see the new certificate.
        admin = cluster.admin()
        assert len(admin.ListNodes(control_pb2.ListNodesRequest()).nodes) == 2
    finally:
        load.stop()
    assert load.failures == []
    assert load.calls > 20


def test_the_orchestrators_previous_certificate_is_revoked_after_its_grace(
    cluster: Cluster,
) -> None:
    lc = lifecycle_of(cluster)
    old = lc.own.issued.serial
    cluster.orch.run(lc.renew_self())
    assert old not in lc.authority.revoked_serials()  # calls in flight may finish
    cluster.orch.run(lc.step(now=time.time() + lc.settings.superseded_grace + 1))
    assert old in lc.authority.revoked_serials()
    assert lc.own.issued.serial not in lc.authority.revoked_serials()
    # The orchestrator still commands its nodes, on channels of the new certificate.
    from protos import node_pb2

    node = cluster.orch.orch.state.node("node-1")
    assert node is not None
    info = cluster.orch.run(
        cluster.orch.orch.reconciler.caller.call(
            node.address, node.id, "node.info", node_pb2.NodeInfoRequest()
        )
    )
    assert info.node_id == node.id  # type: ignore[attr-defined]


def test_a_renewal_makes_the_previous_certificate_unusable_within_its_grace(
    cluster: Cluster,
) -> None:
    # Before: the certificate a node renewed away from stayed valid until it expired,
    # so a key stolen before the renewal kept working for up to a day.
    from protos import node_pb2, node_pb2_grpc
    from protos.wire.channel import client_credentials

    crt, key, ca = cluster.node_files("node-1")
    old = client_credentials(crt.read_bytes(), key.read_bytes(), ca.read_bytes())
    old_serial = x509.load_pem_x509_certificate(crt.read_bytes()).serial_number
    renewer = cluster.nodes["node-1"].renewer
    assert renewer is not None
    renewed = renewer.renew()
    assert renewed is not None

    def gateway_code() -> grpc.StatusCode:
        stub = gateway_pb2_grpc.NodeGatewayStub(grpc.secure_channel(cluster.orch.target, old))
        try:
            stub.Complete(gateway_pb2.TaskResult(request_id="0" * 32), timeout=10)
        except grpc.RpcError as exc:
            return exc.code()  # type: ignore[no-any-return]
        return grpc.StatusCode.OK

    def node_refusal() -> str:
        target = cluster.nodes["node-2"].listening
        stub = node_pb2_grpc.NodeServiceStub(grpc.secure_channel(target, old))
        try:
            stub.GetNodeInfo(node_pb2.NodeInfoRequest(), timeout=10)
        except grpc.RpcError as exc:
            return str(exc.details())
        return "accepted"

    # Within the grace the old certificate still authenticates (calls in flight).
    assert gateway_code() == grpc.StatusCode.PERMISSION_DENIED  # known node, unknown task
    lifecycle = lifecycle_of(cluster)
    cluster.orch.run(lifecycle.step(now=time.time() + lifecycle.settings.superseded_grace + 1))
    assert gateway_code() == grpc.StatusCode.UNAUTHENTICATED
    wait_for(lambda: node_refusal() == "certificate revoked", what="the deny list on node-2")
    events = audit_events(cluster, "cert.superseded")
    assert [e["serial"] for e in events] == [f"{old_serial:X}"]
    # The renewed certificate is untouched: node-1 stays a ready node.
    nodes = {n.name: n for n in cluster.admin().ListNodes(control_pb2.ListNodesRequest()).nodes}
    assert nodes["node-1"].state == "ready"
    assert nodes["node-1"].cert_serial == f"{renewed.serial:X}"
