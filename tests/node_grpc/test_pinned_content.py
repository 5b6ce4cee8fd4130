"""Content is pinned, not claimed (issue 10, item 2), at the node: a pinned image is
loaded, exported and run only with its digest, checked on the bytes before anything
is tagged; a moved volume is replaced only when its source's digest matches."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from collections.abc import Iterator

import grpc
import pytest

from protos import node_pb2
from protos.wire.images import content_ref

from .conftest import Node, meta

IMAGE = "local/busybox:1"
OTHER = "local/other:1"


@pytest.fixture(autouse=True)
def _forget_images(any_node: Node) -> Iterator[None]:
    # Docker tags live on the shared engine beyond a test (the node id is the same in
    # every test): leave none of this test's behind.
    yield
    for c in any_node.agent.runtime.list():
        any_node.agent.runtime.remove(c.name, force=True)
    forget = getattr(any_node.agent.runtime, "forget_images", None)
    if forget is not None:
        forget()


def _code(fn: object, *args: object, **kw: object) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as err:
        result = fn(*args, **kw)  # type: ignore[operator]
        if isinstance(result, Iterator):
            list(result)
    return err.value.code()  # type: ignore[no-any-return]


def _digest(node: Node) -> str:
    return node.agent.runtime.image_ids()[IMAGE]


def _export(node: Node, ref: str = IMAGE) -> bytes:
    return b"".join(
        c.data
        for c in node.stub().ExportImage(
            node_pb2.ImageRef(ref=ref), metadata=meta(node.token("image.export", ref))
        )
    )


def _import(node: Node, ref: str, data: bytes) -> node_pb2.ImageImportResult:
    def chunks() -> Iterator[node_pb2.ImageImportChunk]:
        yield node_pb2.ImageImportChunk(ref=ref)
        for i in range(0, len(data), 200_000):
            yield node_pb2.ImageImportChunk(data=data[i : i + 200_000])

    return node.stub().ImportImage(chunks(), metadata=meta(node.token("image.import", ref)))


def _rewrite(archive: bytes, change: object) -> bytes:
    """The archive with each member passed through ``change(name, data) -> data``."""
    out = io.BytesIO()
    with tarfile.open(fileobj=io.BytesIO(archive)) as src, tarfile.open(
        fileobj=out, mode="w"
    ) as dst:
        for member in src:
            data = src.extractfile(member).read() if member.isfile() else None  # type: ignore[union-attr]
            if data is not None:
                data = change(member.name, data)  # type: ignore[operator]
                member.size = len(data)
            dst.addfile(member, io.BytesIO(data) if data is not None else None)
    return out.getvalue()


def _retag(archive: bytes, ref: str) -> bytes:
    def change(name: str, data: bytes) -> bytes:
        if name != "manifest.json":
            return data
        manifest = json.loads(data)
        for entry in manifest:
            entry["RepoTags"] = [ref]
        return json.dumps(manifest).encode()

    return _rewrite(archive, change)


def _other_content(ref: str) -> bytes:
    """A well-formed one-layer image of other content, tagged ``ref``."""
    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w") as tar:
        payload = b"#!/bin/sh\necho pwned\n"
        info = tarfile.TarInfo("bin/sleep")
        info.size, info.mode = len(payload), 0o755
        tar.addfile(info, io.BytesIO(payload))
    raw = layer.getvalue()
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {}, "rootfs": {
        "type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(raw).hexdigest()]}}).encode()
    name = hashlib.sha256(config).hexdigest()
    manifest = json.dumps([{"Config": f"{name}.json", "RepoTags": [ref],
                            "Layers": ["l0/layer.tar"]}]).encode()
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for member, data in (("manifest.json", manifest), (f"{name}.json", config),
                             ("l0/layer.tar", raw)):
            info = tarfile.TarInfo(member)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def test_other_content_under_a_pinned_name_is_refused_before_anything_is_tagged(
    any_node: Node,
) -> None:
    digest = _digest(any_node)
    before = any_node.agent.runtime.image_ids()
    code = _code(_import, any_node, f"{OTHER}@{digest}", _other_content(OTHER))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert any_node.agent.runtime.image_ids() == before  # nothing tagged, nothing moved
    # The genuine content under that name and pin loads, kept under its content tag.
    genuine = _retag(_export(any_node), OTHER)
    kept = content_ref(f"{OTHER}@{digest}")
    assert list(_import(any_node, f"{OTHER}@{digest}", genuine).refs) == [kept]
    assert any_node.agent.runtime.image_ids()[kept] == digest
    assert OTHER not in any_node.agent.runtime.image_ids()


def test_same_named_images_of_two_pins_live_side_by_side(any_node: Node) -> None:
    # Two tenants pin one name to different content: each loads under its content
    # tag; neither moves the other, and each pin runs its own content.
    genuine_digest = _digest(any_node)
    other = _other_content(OTHER)
    with tarfile.open(fileobj=io.BytesIO(other)) as tar:
        config = next(m for m in tar.getnames() if m.endswith(".json") and m != "manifest.json")
        other_digest = "sha256:" + hashlib.sha256(tar.extractfile(config).read()).hexdigest()  # type: ignore[union-attr]
    first, second = f"{OTHER}@{other_digest}", f"{OTHER}@{genuine_digest}"
    _import(any_node, first, other)
    _import(any_node, second, _retag(_export(any_node), OTHER))
    ids = any_node.agent.runtime.image_ids()
    assert ids[content_ref(first)] == other_digest
    assert ids[content_ref(second)] == genuine_digest
    for n, image in enumerate((first, second)):
        spec = node_pb2.ContainerSpec(
            name=f"c{n}", workload_id=f"wl-{n}", image=image, command=["sleep", "30"]
        )
        st = any_node.stub().CreateContainer(spec, metadata=meta(any_node.create_token(spec)))
        assert st.image == content_ref(image)


def test_a_tampered_layer_behind_the_genuine_config_is_refused(any_node: Node) -> None:
    digest = _digest(any_node)
    archive = _retag(_export(any_node), OTHER)
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        manifest = json.loads(tar.extractfile("manifest.json").read())  # type: ignore[union-attr]
    first_layer = manifest[0]["Layers"][0]

    def flip(name: str, data: bytes) -> bytes:
        if name != first_layer:
            return data
        i = len(data) // 2
        return data[:i] + bytes([data[i] ^ 0xFF]) + data[i + 1 :]

    before = any_node.agent.runtime.image_ids()
    code = _code(_import, any_node, f"{OTHER}@{digest}", _rewrite(archive, flip))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert any_node.agent.runtime.image_ids() == before


def test_a_pin_the_node_does_not_hold_is_neither_exported_nor_run(any_node: Node) -> None:
    wrong = f"{IMAGE}@sha256:{'ab' * 32}"
    assert _code(_export, any_node, wrong) == grpc.StatusCode.NOT_FOUND
    spec = node_pb2.ContainerSpec(
        name="pinned", workload_id="wl-pinned", image=wrong, command=["sleep", "30"]
    )
    code = _code(any_node.stub().CreateContainer, spec, metadata=meta(any_node.create_token(spec)))
    assert code == grpc.StatusCode.NOT_FOUND
    assert any_node.agent.runtime.list() == []
    # The digest it holds: exported, and run.
    assert len(_export(any_node, f"{IMAGE}@{_digest(any_node)}")) > 100_000
    spec.image = f"{IMAGE}@{_digest(any_node)}"
    created = any_node.stub().CreateContainer(spec, metadata=meta(any_node.create_token(spec)))
    assert created.name == "pinned"


def _tar(payload: bytes) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("file.txt")
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))
    return buf.getvalue()


def _import_volume(node: Node, data: bytes, digest: str) -> node_pb2.VolumeImportResult:
    def chunks() -> Iterator[node_pb2.VolumeImportChunk]:
        yield node_pb2.VolumeImportChunk(name="data", data=data)
        yield node_pb2.VolumeImportChunk(digest=digest)

    return node.stub().ImportVolume(
        chunks(), metadata=meta(node.token("volume.import", "data"))
    )


def _volume_file(node: Node) -> bytes:
    chunks = list(
        node.stub().ExportVolume(
            node_pb2.VolumeRef(name="data"), metadata=meta(node.token("volume.export", "data"))
        )
    )
    data = b"".join(c.data for c in chunks)
    # The export ends with the source's digest of everything it sent.
    assert chunks[-1].digest == "sha256:" + hashlib.sha256(data).hexdigest()
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        fh = tar.extractfile("file.txt")
        assert fh is not None
        return fh.read()


def test_a_volume_stream_not_matching_its_digest_leaves_the_volume_as_it_was(
    any_node: Node,
) -> None:
    first = _tar(b"version one\n")
    _import_volume(any_node, first, "sha256:" + hashlib.sha256(first).hexdigest())
    second = _tar(b"version two\n")
    code = _code(_import_volume, any_node, second, "sha256:" + hashlib.sha256(first).hexdigest())
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert _volume_file(any_node) == b"version one\n"
    _import_volume(any_node, second, "sha256:" + hashlib.sha256(second).hexdigest())
    assert _volume_file(any_node) == b"version two\n"
