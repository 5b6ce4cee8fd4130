"""Every NodeService RPC works with a valid token, on both runtimes."""

from __future__ import annotations

import io
import tarfile

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from protos import node_pb2
from tests.waiting import wait_for

from .conftest import Node, meta


def spec(name: str, *cmd: str, volumes: tuple[tuple[str, str], ...] = ()) -> node_pb2.ContainerSpec:
    return node_pb2.ContainerSpec(
        name=name,
        workload_id=f"wl-{name}",
        image="local/busybox:1",
        command=list(cmd),
        cpu=0.5,
        memory=64 * 1024 * 1024,
        volumes=[node_pb2.VolumeMount(name=v, path=p) for v, p in volumes],
    )


def test_container_lifecycle(any_node: Node) -> None:
    stub = any_node.stub()
    s = spec("web", "sh", "-c", "echo hello; echo world; sleep 60")
    st = stub.CreateContainer(s, metadata=meta(any_node.create_token(s)))
    assert st.name == "web" and st.state == "created"
    st = stub.StartContainer(
        node_pb2.ContainerRef(name="web"), metadata=meta(any_node.token("container.start", "web"))
    )
    assert st.state == "running"
    listed = stub.ListContainers(
        node_pb2.ListRequest(), metadata=meta(any_node.token("container.list", "*"))
    )
    assert [c.name for c in listed.containers] == ["web"]

    data = b""

    def logged() -> bool:
        nonlocal data
        chunks = stub.ContainerLogs(
            node_pb2.LogsRequest(name="web"), metadata=meta(any_node.token("container.logs", "web"))
        )
        data = b"".join(c.data for c in chunks)
        return b"world" in data

    wait_for(logged, 20, "both lines in the logs")
    assert b"hello" in data and b"world" in data

    stats = stub.GetContainerStats(
        node_pb2.ContainerRef(name="web"), metadata=meta(any_node.token("container.stats", "web"))
    )
    assert stats.name == "web" and stats.memory_bytes >= 0

    st = stub.RestartContainer(
        node_pb2.StopRequest(name="web", timeout=1),
        metadata=meta(any_node.token("container.restart", "web")),
    )
    assert st.state == "running"
    st = stub.StopContainer(
        node_pb2.StopRequest(name="web", timeout=1),
        metadata=meta(any_node.token("container.stop", "web")),
    )
    assert st.state in ("exited", "dead")
    rm = node_pb2.RemoveRequest(name="web")
    from pki.tokens import request_digest
    from protos import ops

    stub.RemoveContainer(
        rm,
        metadata=meta(
            any_node.token("container.remove", "web", req=request_digest(ops.request_fields(rm)))
        ),
    )
    assert any_node.agent.runtime.list() == []


def test_logs_follow_ends_when_container_exits(any_node: Node) -> None:
    stub = any_node.stub()
    s = spec("counter", "sh", "-c", "for i in 1 2 3; do echo line$i; sleep 0.2; done")
    stub.CreateContainer(s, metadata=meta(any_node.create_token(s)))
    stub.StartContainer(
        node_pb2.ContainerRef(name="counter"),
        metadata=meta(any_node.token("container.start", "counter")),
    )
    chunks = stub.ContainerLogs(
        node_pb2.LogsRequest(name="counter", follow=True),
        metadata=meta(any_node.token("container.logs", "counter")),
        timeout=30,
    )
    data = b"".join(c.data for c in chunks)
    assert data.count(b"line") == 3


def test_node_info(any_node: Node) -> None:
    info = any_node.stub().GetNodeInfo(
        node_pb2.NodeInfoRequest(), metadata=meta(any_node.token("node.info", "*"))
    )
    assert info.node_id == any_node.id
    assert info.runtime == any_node.agent.runtime.name
    assert info.cpus > 0 and info.memory > 0


def test_volume_export_import_round_trip(any_node: Node) -> None:
    stub = any_node.stub()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        payload = b"precious data\n" * 1000
        ti = tarfile.TarInfo("db/file.txt")
        ti.size = len(payload)
        tar.addfile(ti, io.BytesIO(payload))
    data = buf.getvalue()

    def chunks() -> object:
        yield node_pb2.VolumeImportChunk(name="data", data=data[:5000])
        yield node_pb2.VolumeImportChunk(data=data[5000:])

    res = stub.ImportVolume(chunks(), metadata=meta(any_node.token("volume.import", "data")))
    assert res.files >= 1
    out = b"".join(
        c.data
        for c in stub.ExportVolume(
            node_pb2.VolumeRef(name="data"), metadata=meta(any_node.token("volume.export", "data"))
        )
    )
    with tarfile.open(fileobj=io.BytesIO(out)) as tar:
        member = tar.extractfile("db/file.txt")
        assert member is not None and member.read() == payload


def test_image_export_then_import_on_same_node(any_node: Node) -> None:
    stub = any_node.stub()
    image = b"".join(
        c.data
        for c in stub.ExportImage(
            node_pb2.ImageRef(ref="local/busybox:1"),
            metadata=meta(any_node.token("image.export", "local/busybox:1")),
        )
    )
    assert len(image) > 100_000

    def chunks() -> object:
        yield node_pb2.ImageImportChunk(ref="local/busybox:1")
        for i in range(0, len(image), 200_000):
            yield node_pb2.ImageImportChunk(data=image[i : i + 200_000])

    res = stub.ImportImage(
        chunks(), metadata=meta(any_node.token("image.import", "local/busybox:1"))
    )
    assert "local/busybox:1" in res.refs


def test_health_and_reflection_answer_standard_tools(process_node: Node) -> None:
    channel = grpc.secure_channel(process_node.target, process_node.cluster.credentials("orch"))
    resp = health_pb2_grpc.HealthStub(channel).Check(
        health_pb2.HealthCheckRequest(service="capstan.v1.NodeService")
    )
    assert resp.status == health_pb2.HealthCheckResponse.SERVING
    refl = reflection_pb2_grpc.ServerReflectionStub(channel)
    answers = list(
        refl.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
    )
    names = {s.name for s in answers[0].list_services_response.service}
    assert "capstan.v1.NodeService" in names


@pytest.mark.parametrize("name", ["../etc", "UPPER", "a" * 100])
def test_bad_container_name_is_invalid_argument(process_node: Node, name: str) -> None:
    s = spec("x", "true")
    s.name = name
    with pytest.raises(grpc.RpcError) as err:
        process_node.stub().CreateContainer(s, metadata=meta(process_node.create_token(s)))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "name" in (err.value.details() or "")
    assert process_node.agent.runtime.list() == []


def test_empty_container_name_can_never_be_authorized(process_node: Node) -> None:
    # No token can name an empty resource (mint refuses it), so whatever token comes
    # with such a request is for something else: refused before validation.
    s = spec("x", "true")
    s.name = ""
    with pytest.raises(grpc.RpcError) as err:
        process_node.stub().CreateContainer(
            s, metadata=meta(process_node.create_token(spec("x", "true")))
        )
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert err.value.details() == "wrong resource"
    assert process_node.agent.runtime.list() == []
