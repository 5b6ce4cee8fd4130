"""Blast radius: what one compromised node, and one hostile tenant, can reach.

The attacker holds node-1's key and certificate and runs code of its own (these
tests). Every RPC of the orchestrator and of node-2 is enumerated from the service
descriptors -- a method added later without a case here fails the suite -- and called
with every token node-1 can obtain. The only effects allowed are on node-1's own
assignments and the one operation the orchestrator delegated to it; everything else is
refused with the exact status and leaves node-2 and the orchestrator as they were.
The same for a tenant user's certificate against another tenant's application.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor as gdesc
from google.protobuf import message_factory
from google.protobuf.message import Message

from node.join import load_joined
from pki.certs import load_pem_chain, thumbprint
from pki.tokenkeys import TokenKeyStore
from pki.tokens import mint
from protos import control_pb2, gateway_pb2, node_pb2, ops, secrets_pb2, topology_pb2
from tests.waiting import wait_for

from .conftest import Cluster

UNAUTH = grpc.StatusCode.UNAUTHENTICATED
DENIED = grpc.StatusCode.PERMISSION_DENIED
IMAGE = "local/busybox:1"


def _service(module: Any, name: str) -> gdesc.ServiceDescriptor:
    return module.DESCRIPTOR.services_by_name[name]  # type: ignore[no-any-return]


def _request_of(method: gdesc.MethodDescriptor, **fields: Any) -> Message:
    """A request of the method's input type, with ``fields`` that exist on it."""
    cls = message_factory.GetMessageClass(method.input_type)
    strings = {
        f.name for f in method.input_type.fields if f.type == gdesc.FieldDescriptor.TYPE_STRING
    }
    return cls(**{k: v for k, v in fields.items() if k in strings})


def _invoke(
    channel: grpc.Channel,
    method: gdesc.MethodDescriptor,
    request: Message,
    metadata: tuple[tuple[str, str], ...] = (),
) -> grpc.RpcError | None:
    """Call ``method`` generically; None when it succeeded, the error otherwise."""
    path = f"/{method.containing_service.full_name}/{method.name}"
    ser = type(request).SerializeToString
    kw: dict[str, Any] = {"request_serializer": ser, "response_deserializer": lambda b: b}
    try:
        if method.client_streaming and method.server_streaming:
            stream = channel.stream_stream(path, **kw)(
                iter([request]), metadata=metadata, timeout=5
            )
            for _ in stream:
                break
        elif method.client_streaming:
            channel.stream_unary(path, **kw)(iter([request]), metadata=metadata, timeout=5)
        elif method.server_streaming:
            for _ in channel.unary_stream(path, **kw)(request, metadata=metadata, timeout=5):
                pass
        else:
            channel.unary_unary(path, **kw)(request, metadata=metadata, timeout=5)
    except grpc.RpcError as err:
        return err
    return None


def _bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


def _cert_thumbprint(c: Cluster, name: str) -> str:
    joined = load_joined(c.root / name)
    assert joined is not None
    return thumbprint(load_pem_chain(joined.files.cert.read_bytes())[0])


def _signer(c: Cluster) -> Any:
    return TokenKeyStore.open(c.orch.orch.config.pki_dir / "token-keys").signer()


# -- what node-1 can hold -------------------------------------------------------------
#
# Each kind is a token node-1 obtains in the course of things, re-minted fresh per call
# (it would collect many over time): the delegation the orchestrator hands it, the push
# commands it receives, and the delegations other nodes present to it.


def _delegated(c: Cluster, op: str, res: str) -> str:
    """The orchestrator's delegation to node-1: export IMAGE from node-2, once."""
    del op, res
    return mint(
        _signer(c),
        iss=c.orch.orch.identity,
        sub=c.nodes["node-1"].node_id,
        aud=c.nodes["node-2"].node_id,
        op="image.export",
        res=IMAGE,
        cnf=_cert_thumbprint(c, "node-1"),
        ttl=10,
        now=time.time(),
    )


def _received_push(c: Cluster, op: str, res: str) -> str:
    """A command the orchestrator sent node-1, for this very operation and resource."""
    return mint(
        _signer(c),
        iss=c.orch.orch.identity,
        sub=c.orch.orch.identity,
        aud=c.nodes["node-1"].node_id,
        op=op,
        res=res,
        cnf="A" * 43,
        ttl=10,
        now=time.time(),
    )


def _presented_by_peer(c: Cluster, op: str, res: str) -> str:
    """A delegation node-2 presented to node-1 (node-2 fetching from node-1)."""
    return mint(
        _signer(c),
        iss=c.orch.orch.identity,
        sub=c.nodes["node-2"].node_id,
        aud=c.nodes["node-1"].node_id,
        op=op,
        res=res,
        cnf=_cert_thumbprint(c, "node-2"),
        ttl=10,
        now=time.time(),
    )


TOKENS: dict[str, tuple[Callable[[Cluster, str, str], str] | None, grpc.StatusCode, str]] = {
    # kind: (how node-1 gets it, the status node-2 answers with, its details)
    "none": (None, UNAUTH, "invalid"),
    "delegated": (_delegated, DENIED, "wrong operation"),
    "received-push": (_received_push, DENIED, "not for this node"),
    "presented-by-peer": (_presented_by_peer, DENIED, "not for this node"),
}


def _node2_state(c: Cluster) -> tuple[object, ...]:
    agent = c.nodes["node-2"].agent
    return (
        sorted((s.name, s.state) for s in agent.runtime.list()),
        sorted(agent.runtime.images()),
        sorted(p.name for p in (c.root / "node-2" / "volumes").glob("*")),
    )


def _request_for(method: gdesc.MethodDescriptor, res: str) -> Message:
    """The request whose resource is ``res`` (so only the token's rules can refuse it)."""
    return _request_of(method, name=res, ref=res, res=res, workload_id="wl-x", image=IMAGE)


def _resource_for(op: ops.Operation, token_kind: str) -> str:
    if token_kind == "delegated":
        return IMAGE  # the delegation's own resource, stretched to every other method
    if op.resource is ops.BY_OP["node.info"].resource:
        return ops.NODE_RESOURCE
    if op.op == "link.open":
        return "acme/shop/db:5432"
    return "default.shop.web.0" if op.op.startswith("container") else "default.shop.data"


NODE_METHODS = _service(node_pb2, "NodeService").methods


def test_every_node_method_has_a_blast_radius_case() -> None:
    # The operation table is the node's gate; a method outside it is refused, but the
    # suite below must also call it: a new RPC cannot escape enumeration.
    table = {o.method for o in ops.OPERATIONS}
    assert {m.name for m in NODE_METHODS} <= table | {"Tunnel"}


@pytest.mark.parametrize("token_kind", sorted(TOKENS))
def test_compromised_node_reaches_nothing_on_another_node(
    cluster: Cluster, token_kind: str
) -> None:
    """Every NodeService method of node-2, called by node-1 with one kind of token."""
    make, code, details = TOKENS[token_kind]
    before = _node2_state(cluster)
    channel = grpc.secure_channel(
        cluster.nodes["node-2"].listening, cluster.node_credentials("node-1")
    )
    effects: list[str] = []
    refusals: list[tuple[str, grpc.StatusCode, str]] = []
    for method in NODE_METHODS:
        op = ops.BY_METHOD[f"/{ops.SERVICE}/{method.name}"]
        res = _resource_for(op, token_kind)
        request = _request_for(method, res)
        meta: tuple[tuple[str, str], ...] = ()
        if make is not None:
            token = make(cluster, op.op, res)
            meta = _bearer(token)
        err = _invoke(channel, method, request, meta)
        if token_kind == "delegated" and method.name == "ExportImage":
            # The one thing the orchestrator delegated: node-2's copy of IMAGE, once.
            assert err is None, f"the delegated export itself failed: {err}"
            continue
        if err is None:
            effects.append(method.name)
            continue
        refusals.append((method.name, err.code(), err.details() or ""))
    channel.close()
    assert effects == [], f"node-1 reached {effects} on node-2 with {token_kind} tokens"
    wrong = [(m, c, d) for m, c, d in refusals if (c, d) != (code, details)]
    assert wrong == [], f"expected {code.name} {details!r} everywhere, got {wrong}"
    assert _node2_state(cluster) == before
    audit = cluster.nodes["node-2"].agent.audit.entries()
    refused = [e for e in audit if e["event"] == "refused"]
    assert len(refused) >= len(refusals)
    assert all(e["caller"].endswith("/node/node-1") for e in refused[-len(refusals) :])


# -- the orchestrator, through node-1's certificate -----------------------------------


def _snapshot(c: Cluster) -> tuple[object, ...]:
    admin = c.admin()
    return (
        sorted(
            (n.name, n.state, n.cordoned, tuple(sorted(n.labels.items())), n.pool)
            for n in admin.ListNodes(control_pb2.ListNodesRequest()).nodes
        ),
        sorted(a.name for a in admin.ListApps(control_pb2.ListAppsRequest()).apps),
        sorted((w.id, w.node) for w in c.workloads()),
    )


def test_node_certificate_reaches_no_control_method(cluster: Cluster) -> None:
    before = _snapshot(cluster)
    channel = grpc.secure_channel(cluster.orch.target, cluster.node_credentials("node-1"))
    results = {}
    user_methods = [
        *_service(control_pb2, "ControlService").methods,
        *_service(secrets_pb2, "SecretService").methods,
    ]
    for method in user_methods:
        request = _request_of(method, name="node-2", node="node-2", app="shop")
        err = _invoke(channel, method, request)
        results[method.name] = None if err is None else (err.code(), err.details())
    channel.close()
    reached = {m: r for m, r in results.items() if r is None or r[0] != DENIED}
    assert reached == {}, f"a node certificate reached ControlService methods: {reached}"
    assert _snapshot(cluster) == before


# Each NodeGateway method and the harm node-1 would do with it if it could: the case
# calls it aimed at node-2 and returns the status it got. Join is on its own port and
# takes no client certificate; its abuse is a join token it does not have.
def _gateway_watch(c: Cluster) -> grpc.RpcError | None:
    stub = c.as_node("node-1")
    try:
        for _ in stub.Watch(gateway_pb2.WatchRequest(node="node-2"), timeout=5):
            break
    except grpc.RpcError as err:
        return err
    return None


def _gateway_complete(c: Cluster) -> grpc.RpcError | None:
    try:
        c.as_node("node-1").Complete(gateway_pb2.TaskResult(request_id="t-of-node-2"), timeout=5)
    except grpc.RpcError as err:
        return err
    return None


def _gateway_report(c: Cluster) -> grpc.RpcError | None:
    victim = next(w for w in c.workloads() if w.node == "node-2")
    status = gateway_pb2.NodeStatus(
        containers=[node_pb2.ContainerStatus(name=victim.id, workload_id=victim.id, state="exited")]
    )
    try:
        for _ in c.as_node("node-1").Report(iter([status]), timeout=5):
            pass
    except grpc.RpcError as err:
        return err
    return None


def _gateway_renew(c: Cluster) -> grpc.RpcError | None:
    # A renewal signs what the orchestrator recorded for the caller: whatever node-1
    # puts in its CSR, the certificate it gets back is node-1's.
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    node2 = c.nodes["node-2"].node_id
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "node-2")]))
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(node2)]), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    pem = csr.public_bytes(serialization.Encoding.PEM)
    try:
        reply = c.as_node("node-1").Renew(gateway_pb2.RenewRequest(csr_pem=pem), timeout=10)
    except grpc.RpcError as err:
        return err
    issued = load_pem_chain(reply.certificate_chain)[0]
    uris = issued.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [u.value for u in uris if isinstance(u, x509.UniformResourceIdentifier)] == [
        c.nodes["node-1"].node_id
    ]
    return None


GATEWAY_CASES: dict[str, tuple[Callable[[Cluster], grpc.RpcError | None], set[str]]] = {
    # method: (attack, statuses accepted: "ok" only where the effect is node-1's own)
    "Watch": (_gateway_watch, {"PERMISSION_DENIED"}),
    "Complete": (_gateway_complete, {"PERMISSION_DENIED"}),
    "Report": (_gateway_report, {"PERMISSION_DENIED"}),
    "Renew": (_gateway_renew, {"ok"}),
}


def test_node_certificate_on_the_gateway_touches_only_its_own(cluster: Cluster) -> None:
    cluster.admin().Apply(
        control_pb2.ApplyRequest(
            app=topology_pb2.Application(
                name="shop",
                services=[
                    topology_pb2.Service(
                        name="web", image=IMAGE, command=["sleep", "600"], replicas=2
                    )
                ],
            )
        )
    )
    wait_for(
        lambda: (
            sum(w.state == "running" for w in cluster.workloads()) == 2
            and any(w.node == "node-2" for w in cluster.workloads())
        ),
        what="two running instances, one on node-2",
    )
    methods = {m.name for m in _service(gateway_pb2, "NodeGateway").methods} - {"Join"}
    assert methods == set(GATEWAY_CASES), "a NodeGateway method has no blast-radius case"
    before = sorted((w.id, w.node, w.state) for w in cluster.workloads())
    for name, (attack, allowed) in GATEWAY_CASES.items():
        err = attack(cluster)
        got = "ok" if err is None else err.code().name
        assert got in allowed, f"{name}: {got} ({err and err.details()})"
    assert sorted((w.id, w.node, w.state) for w in cluster.workloads()) == before


# -- a hostile tenant -----------------------------------------------------------------


def _tenant_app(tenant: str) -> control_pb2.ApplyRequest:
    return control_pb2.ApplyRequest(
        app=topology_pb2.Application(
            name="shop",
            tenant=tenant,
            services=[
                topology_pb2.Service(name="web", image=IMAGE, command=["sleep", "600"], replicas=1)
            ],
        )
    )


def test_tenant_reaches_nothing_of_another_tenant(cluster: Cluster) -> None:
    cluster.admin().Apply(_tenant_app("acme"))
    wait_for(
        lambda: any(w.state == "running" and w.tenant == "acme" for w in cluster.workloads()),
        what="acme's instance running",
    )
    before = _snapshot(cluster)
    mallory = cluster.orch.control("mallory", "tenant:evil")
    creds = cluster.orch.user("mallory", "tenant:evil")
    ch = grpc.secure_channel(cluster.orch.target, creds)
    seen: dict[str, str] = {}
    for method in [
        *_service(control_pb2, "ControlService").methods,
        *_service(secrets_pb2, "SecretService").methods,
    ]:
        request = _request_of(
            method, name="node-2", node="node-2", app="shop", tenant="acme", instance="shop/web.0"
        )
        if method.name == "Apply":
            request = _tenant_app("acme")
        err = _invoke(ch, method, request)
        seen[method.name] = "ok" if err is None else err.code().name
    ch.close()
    # What a tenant may call at all returns only its own (empty) view; everything
    # aimed at acme or at the cluster is refused.
    leaked = {m: s for m, s in seen.items() if s not in ("PERMISSION_DENIED", "NOT_FOUND", "ok")}
    assert leaked == {}, leaked
    assert seen["Apply"] == "PERMISSION_DENIED"
    assert seen["DeleteApp"] in ("PERMISSION_DENIED", "NOT_FOUND")
    assert seen["Logs"] in ("PERMISSION_DENIED", "NOT_FOUND")
    for admin_only in ("Cordon", "Drain", "CreateJoinToken", "RevokeNode", "PkiStatus"):
        if admin_only in seen:
            assert seen[admin_only] == "PERMISSION_DENIED", (admin_only, seen[admin_only])
    assert _snapshot(cluster) == before
    listed = mallory.ListWorkloads(control_pb2.WorkloadFilter())
    assert [w for w in listed.workloads if w.tenant == "acme"] == []
