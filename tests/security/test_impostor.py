"""Peers are checked by identity, not host name (issue 10 item 3).

A certificate of the cluster's own CA that carries the orchestrator's host name and
address (what the `VM`/`vm` join flaw handed a node) serves at an address the victim
dials. Every client must refuse it in the handshake, before a request, a token, a
join token or a CSR leaves: the impostor records every call that reaches it, and
must record none.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest

from node.join import JoinError, JoinOptions, ensure_joined
from node.renewal import gateway_channel
from orchestrator.client import ControlClient, ControlError
from orchestrator.context import Context
from protos import control_pb2, gateway_pb2, gateway_pb2_grpc, node_pb2
from protos.wire.errors import WRONG_SERVER, NodeCallError, status_of

from .conftest import Cluster


@dataclass
class Impostor:
    """A gRPC server with a certificate of the right CA but the wrong identity."""

    address: str
    server: grpc.Server
    calls: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


class _Recorder(grpc.GenericRpcHandler):  # type: ignore[misc]
    def __init__(self, impostor: Impostor) -> None:
        self._impostor = impostor

    def service(self, details: Any) -> None:
        with self._impostor.lock:
            self._impostor.calls.append(details.method)
        # UNIMPLEMENTED, but the call got here: the damage is done


def _serve_impostor(c: Cluster, *, kind: str, name: str) -> Impostor:
    # The orchestrator's own names, in a certificate of the same CA for someone else.
    issued = c.orch.authority.issue(kind, name, dns=["localhost", "LocalHost"], ips=["127.0.0.1"])
    assert issued.key_pem is not None
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    creds = grpc.ssl_server_credentials(
        [(issued.key_pem, issued.chain_pem)], root_certificates=c.orch.authority.trust_bundle()
    )
    port = server.add_secure_port("127.0.0.1:0", creds)
    impostor = Impostor(f"127.0.0.1:{port}", server)
    server.add_generic_rpc_handlers((_Recorder(impostor),))
    server.start()
    return impostor


@pytest.fixture
def impostor(cluster: Cluster) -> Iterator[Impostor]:
    imp = _serve_impostor(cluster, kind="node", name="impostor")
    yield imp
    imp.server.stop(0)


def test_a_node_certificate_on_the_orchestrators_name_gets_no_report_from_a_node(
    cluster: Cluster, impostor: Impostor
) -> None:
    # Before: the node's gateway channel checked only the host name, so the impostor
    # received its report stream and could push its own token key down it.
    crt, _, _ = cluster.node_files("node-1")
    channel = gateway_channel(impostor.address, cluster.node_credentials("node-1"), crt)
    stub = gateway_pb2_grpc.NodeGatewayStub(channel)
    with pytest.raises(grpc.RpcError) as err:
        stub.Complete(gateway_pb2.TaskResult(request_id="r"), timeout=10)
    status = status_of(err.value)
    assert status.code == grpc.StatusCode.UNAVAILABLE and WRONG_SERVER in status.details
    with pytest.raises(grpc.RpcError):
        next(iter(stub.Report(iter([gateway_pb2.NodeStatus()]), timeout=10)))
    channel.close()
    assert impostor.calls == []


def test_a_node_certificate_on_the_orchestrators_name_gets_no_cli_call(
    cluster: Cluster, impostor: Impostor, tmp_path: Path
) -> None:
    issued = cluster.orch.authority.issue("user", "alice", role="admin")
    assert issued.key_pem is not None
    (tmp_path / "u.crt").write_bytes(issued.chain_pem)
    (tmp_path / "u.key").write_bytes(issued.key_pem)
    (tmp_path / "ca.crt").write_bytes(cluster.orch.authority.trust_bundle())
    ctx = Context(
        "imp", impostor.address, tmp_path / "ca.crt", tmp_path / "u.crt", tmp_path / "u.key"
    )
    with ControlClient(ctx, timeout=10) as client, pytest.raises(ControlError) as err:
        client._call("ListNodes", control_pb2.ListNodesRequest())
    assert err.value.code == "UNAVAILABLE" and WRONG_SERVER in err.value.details
    assert impostor.calls == []


def test_a_node_certificate_on_the_orchestrators_name_never_sees_a_join_token(
    cluster: Cluster, impostor: Impostor
) -> None:
    token = cluster.admin().CreateJoinToken(control_pb2.JoinTokenRequest(name="node-3")).token
    ca_file = cluster.root / "cluster-ca.crt"
    ca_file.write_bytes(cluster.orch.authority.trust_bundle())
    options = JoinOptions(name="node-3", listen="127.0.0.23:0", ips=("127.0.0.23",))
    with pytest.raises(JoinError) as err:
        ensure_joined(cluster.root / "node-3", impostor.address, token, ca_file, options)
    assert WRONG_SERVER in str(err.value)
    assert impostor.calls == []
    # Never sent, so never spent: the genuine orchestrator still takes it.
    joined, reused = ensure_joined(
        cluster.root / "node-3", cluster.orch.join_target, token, ca_file, options
    )
    assert not reused and joined.name == "node-3"


def test_another_nodes_certificate_at_a_nodes_address_gets_no_orchestrator_call(
    cluster: Cluster,
) -> None:
    # The orchestrator calls node-1 at an address where node-2 answers (a moved
    # address, a hijacked route): node-2 never sees the request or its token.
    node2 = cluster.nodes["node-2"]
    node1_id = "spiffe://orch.test/node/node-1"
    before = len(node2.agent.audit.entries())
    caller = cluster.orch.orch.reconciler.caller
    with pytest.raises(NodeCallError) as err:
        cluster.orch.run(
            caller.call(node2.listening, node1_id, "node.info", node_pb2.NodeInfoRequest())
        )
    assert err.value.code == grpc.StatusCode.UNAVAILABLE and WRONG_SERVER in err.value.details
    assert len(node2.agent.audit.entries()) == before
    # The same caller reaches the genuine node-2 by its identity.
    info = cluster.orch.run(
        caller.call(node2.listening, node2.agent.node_id, "node.info", node_pb2.NodeInfoRequest())
    )
    assert info.node_id == node2.agent.node_id  # type: ignore[attr-defined]


def test_join_reserves_the_orchestrators_names_in_any_spelling(cluster: Cluster) -> None:
    # Before: `VM` passed the reserved-name check and the CA issued `vm`.
    stub = cluster.orch.join_stub()
    token = cluster.admin().CreateJoinToken(control_pb2.JoinTokenRequest(name="node-4")).token
    for dns, ips in (
        (["LOCALHOST"], []),
        (["LocalHost."], []),
        ([], ["::ffff:127.0.0.1"]),
        (["localhost"], []),
    ):
        host = ips[0] if ips else dns[0]
        address = f"[{host}]:7000" if ":" in host else f"{host}:7000"
        with pytest.raises(grpc.RpcError) as err:
            stub.Join(
                gateway_pb2.JoinRequest(
                    join_token=token, csr_pem=b"", name="node-4", dns=dns, ips=ips, address=address
                ),
                timeout=10,
            )
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (dns, ips, err.value.details())
        assert "reserved" in (err.value.details() or "")
    nodes = cluster.admin().ListNodes(control_pb2.ListNodesRequest()).nodes
    assert "node-4" not in [n.name for n in nodes]
    issued = [e for e in cluster.audit() if e.get("event") == "cert.issued"]
    assert all(e.get("name") != "node-4" for e in issued)
