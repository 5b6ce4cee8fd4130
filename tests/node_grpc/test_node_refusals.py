"""The foundation's negative corpus replayed at the gRPC level against a real agent.

Each case asserts the exact status code, that nothing ran on the runtime, and that
the refusal was written to the node's audit trail.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest

from node.server import TRUST_FILE_CHECK
from pki.tokenkeys import TokenKeyStore
from protos import node_pb2, node_pb2_grpc, ops

from .conftest import Cluster, Node, meta

UNAUTH = grpc.StatusCode.UNAUTHENTICATED
DENIED = grpc.StatusCode.PERMISSION_DENIED


def web_spec(command: str = "sleep 30") -> node_pb2.ContainerSpec:
    return node_pb2.ContainerSpec(
        name="web", workload_id="wl-web", image="local/busybox:1", command=["sh", "-c", command]
    )


def create(
    node: Node,
    metadata: tuple[tuple[str, str], ...] | None,
    caller: str = "orch",
    request: node_pb2.ContainerSpec | None = None,
) -> grpc.RpcError:
    stub = node.stub(caller)
    with pytest.raises(grpc.RpcError) as err:
        stub.CreateContainer(request or web_spec(), metadata=metadata)
    return err.value


def assert_refused(
    node: Node, err: grpc.RpcError, code: grpc.StatusCode, reason: str | None = None
) -> None:
    assert err.code() == code, err.details()
    if reason is not None:
        assert err.details() == reason
    assert node.agent.runtime.list() == [], "the runtime was touched"
    events = node.agent.audit.entries()
    assert events and events[-1]["event"] == "refused" and events[-1]["code"] == code.name


def test_no_token(process_node: Node) -> None:
    assert_refused(process_node, create(process_node, None), UNAUTH, "invalid")


@pytest.mark.parametrize(
    "header",
    ["Bearer ", "Bearer garbage", "Bearer a.b.c", "Basic dXNlcjpwYXNz", "Bearer " + "x" * 9000],
    ids=["empty", "garbage", "three-dots", "basic-auth", "oversize"],
)
def test_bad_token(process_node: Node, header: str) -> None:
    err = create(process_node, (("authorization", header),))
    assert_refused(process_node, err, UNAUTH, "invalid")


def test_two_authorization_headers(process_node: Node) -> None:
    tok = process_node.create_token(web_spec())
    err = create(
        process_node, (("authorization", f"Bearer {tok}"), ("authorization", f"Bearer {tok}"))
    )
    assert_refused(process_node, err, UNAUTH)


def test_token_for_another_node(process_node: Node, cluster: Cluster) -> None:
    from pki.tokens import request_digest
    from protos import ops

    s = web_spec()
    tok = cluster.token(
        "orch",
        cluster.ids["node-b"].identity.uri,
        "container.create",
        "web",
        req=request_digest(ops.request_fields(s)),
        now=process_node.clock(),
    )
    assert_refused(process_node, create(process_node, meta(tok)), DENIED, "not for this node")


def test_token_for_another_operation(process_node: Node) -> None:
    tok = process_node.token("container.start", "web")
    assert_refused(process_node, create(process_node, meta(tok)), DENIED, "wrong operation")


def test_token_for_another_resource(process_node: Node) -> None:
    other = web_spec()
    other.name = "db"
    tok = process_node.create_token(other)
    assert_refused(process_node, create(process_node, meta(tok)), DENIED, "wrong resource")


def test_token_for_other_parameters(process_node: Node) -> None:
    tok = process_node.create_token(web_spec("sleep 30"))
    err = create(process_node, meta(tok), request=web_spec("rm -rf /data"))
    assert_refused(process_node, err, DENIED, "wrong resource")


def test_token_of_another_certificate(process_node: Node) -> None:
    # A token minted for node-b, presented by the orchestrator's connection.
    from pki.tokens import request_digest
    from protos import ops

    tok = process_node.token(
        "container.create",
        "web",
        caller="node-b",
        req=request_digest(ops.request_fields(web_spec())),
    )
    assert_refused(
        process_node, create(process_node, meta(tok), caller="orch"), DENIED, "not for this caller"
    )


def test_replayed_token(process_node: Node) -> None:
    stub = process_node.stub()
    s = web_spec()
    tok = process_node.create_token(s)
    stub.CreateContainer(s, metadata=meta(tok))
    process_node.agent.runtime.remove("web", force=True)
    err = create(process_node, meta(tok))
    assert_refused(process_node, err, UNAUTH, "replayed")


def test_expired_token(process_node: Node) -> None:
    tok = process_node.create_token(web_spec())
    process_node.clock.advance(120)
    assert_refused(process_node, create(process_node, meta(tok)), UNAUTH, "expired")


def test_token_from_unknown_key(process_node: Node, cluster: Cluster, tmp_path: Path) -> None:
    from pki.tokens import request_digest
    from protos import ops

    rogue = TokenKeyStore.create(tmp_path / "rogue-keys")
    tok = process_node.token(
        "container.create",
        "web",
        req=request_digest(ops.request_fields(web_spec())),
        signer_store=rogue,
    )
    assert_refused(process_node, create(process_node, meta(tok)), UNAUTH, "invalid")


def test_stale_epoch(process_node: Node) -> None:
    stub = process_node.stub()
    stub.GetNodeInfo(
        node_pb2.NodeInfoRequest(), metadata=meta(process_node.token("node.info", "*", epoch=5))
    )
    tok = process_node.create_token(web_spec())  # epoch 0, from a deposed leader
    assert_refused(process_node, create(process_node, meta(tok)), DENIED, "stale epoch")


def test_revoked_caller_certificate(process_node: Node, cluster: Cluster) -> None:
    tok = process_node.create_token(web_spec())
    cluster.write_deny(f"{cluster.ids['orch'].serial:X}\n")
    try:
        assert_refused(process_node, create(process_node, meta(tok)), UNAUTH, "certificate revoked")
    finally:
        cluster.write_deny("")
    # Revocation lifted: a fresh token works again (the deny list is re-read on change).
    s = web_spec()
    process_node.stub().CreateContainer(s, metadata=meta(process_node.create_token(s)))


def test_a_deny_list_changed_by_another_process_counts_within_the_check_interval(
    process_node: Node, cluster: Cluster
) -> None:
    # The node looks at its trust files at most every TRUST_FILE_CHECK seconds of its
    # clock for outside changes (its own updates count at once: test above).
    info = process_node.token("node.info", ops.NODE_RESOURCE)
    process_node.stub().GetNodeInfo(node_pb2.NodeInfoRequest(), metadata=meta(info))  # looked at
    tmp = cluster.deny_path.with_suffix(".other")
    tmp.write_text(f"{cluster.ids['orch'].serial:X}\n")
    os.replace(tmp, cluster.deny_path)  # not through atomic_write: as another process
    try:
        process_node.clock.advance(TRUST_FILE_CHECK)
        tok = meta(process_node.create_token(web_spec()))
        assert_refused(process_node, create(process_node, tok), UNAUTH, "certificate revoked")
    finally:
        cluster.write_deny("")


def _handshake_refused(node: Node, creds: grpc.ChannelCredentials) -> grpc.RpcError:
    channel = grpc.secure_channel(node.target, creds)
    stub = node_pb2_grpc.NodeServiceStub(channel)
    with pytest.raises(grpc.RpcError) as err:
        stub.CreateContainer(web_spec(), metadata=meta(node.create_token(web_spec())), timeout=10)
    channel.close()
    return err.value


def test_certificate_from_another_ca(process_node: Node, cluster: Cluster) -> None:
    crt = (cluster.root / "evil" / "orch.crt").read_bytes()
    key = (cluster.root / "evil" / "orch.key").read_bytes()
    ca = (cluster.root / "certs" / "ca.crt").read_bytes()
    err = _handshake_refused(process_node, grpc.ssl_channel_credentials(ca, key, crt))
    assert err.code() == grpc.StatusCode.UNAVAILABLE
    assert process_node.agent.runtime.list() == []


def test_no_client_certificate(process_node: Node, cluster: Cluster) -> None:
    ca = (cluster.root / "certs" / "ca.crt").read_bytes()
    err = _handshake_refused(process_node, grpc.ssl_channel_credentials(ca))
    assert err.code() == grpc.StatusCode.UNAVAILABLE
    assert process_node.agent.runtime.list() == []


STREAM_CASES: list[
    tuple[str, Callable[[node_pb2_grpc.NodeServiceStub, tuple[tuple[str, str], ...]], object]]
] = [
    (
        "volume.import",
        lambda s, m: s.ImportVolume(
            iter([node_pb2.VolumeImportChunk(name="data", data=b"x" * 1024)]), metadata=m
        ),
    ),
    (
        "image.import",
        lambda s, m: s.ImportImage(
            iter([node_pb2.ImageImportChunk(ref="local/evil:1", data=b"x" * 1024)]), metadata=m
        ),
    ),
    (
        "volume.export",
        lambda s, m: list(s.ExportVolume(node_pb2.VolumeRef(name="data"), metadata=m)),
    ),
    (
        "image.export",
        lambda s, m: list(s.ExportImage(node_pb2.ImageRef(ref="local/busybox:1"), metadata=m)),
    ),
    (
        "container.logs",
        lambda s, m: list(s.ContainerLogs(node_pb2.LogsRequest(name="web"), metadata=m)),
    ),
]


@pytest.mark.parametrize(("op", "call"), STREAM_CASES, ids=[c[0] for c in STREAM_CASES])
def test_streaming_rpcs_refuse_a_token_for_another_operation(
    process_node: Node, op: str, call: Callable
) -> None:  # type: ignore[type-arg]
    tok = process_node.token("node.info", "*")
    with pytest.raises(grpc.RpcError) as err:
        call(process_node.stub(), meta(tok))
    assert err.value.code() == DENIED
    assert not (process_node.agent.runtime.list())
    volumes = Path(
        process_node.agent.runtime.state_dir
        if hasattr(process_node.agent.runtime, "state_dir")
        else "."
    )
    assert not (volumes / "volumes" / "data").exists()


def test_every_refusal_is_one_log_line_and_audited(process_node: Node) -> None:
    before = len(process_node.agent.audit.entries())
    for _ in range(3):
        create(process_node, None)
    assert len(process_node.agent.audit.entries()) == before + 3
    assert process_node.agent.audit.verify() is None


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"network": "host"}, "network"),
        ({"user": "0"}, "user"),
        ({"user": "1000:0"}, "user"),
        ({"cap_add": ["NET_ADMIN"]}, "cap_add[0]"),
        ({"low_ports": True}, "low_ports"),
    ],
)
def test_create_asking_more_than_the_nodes_policy_is_refused_whatever_the_token(
    any_node: Node, change: dict[str, object], field: str
) -> None:
    # The node joined with no policy: nothing beyond the defaults. The token is a good
    # one, minted by the orchestrator's key for exactly this spec.
    request = web_spec()
    for key, value in change.items():
        if isinstance(value, list):
            getattr(request, key).extend(value)
        else:
            setattr(request, key, value)
    err = create(any_node, meta(any_node.create_token(request)), request=request)
    assert err.code() == DENIED
    assert (err.details() or "").startswith(f"{field}: ")
    assert [c.name for c in any_node.agent.runtime.list()] == []  # nothing created
