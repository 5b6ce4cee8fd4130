"""Image layers come from peers that may be hostile: a whiteout names one entry of its
own directory and nothing else (issue 10, item 8)."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from protos import node_pb2

from .conftest import Node, meta

REF = "local/evil:1"


def _tar(*files: tuple[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in files:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _archive(layer: bytes) -> bytes:
    diff_id = "sha256:" + hashlib.sha256(layer).hexdigest()
    config = json.dumps({"os": "linux", "config": {}, "rootfs": {"type": "layers",
                                                                   "diff_ids": [diff_id]}})
    config_name = hashlib.sha256(config.encode()).hexdigest() + ".json"
    manifest = json.dumps([{"Config": config_name, "RepoTags": [REF],
                            "Layers": ["l0/layer.tar"]}])
    return _tar(("manifest.json", manifest.encode()), (config_name, config.encode()),
                ("l0/layer.tar", layer))


def _tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def _chunks(data: bytes) -> Iterator[node_pb2.ImageImportChunk]:
    yield node_pb2.ImageImportChunk(ref=REF, data=data)


@pytest.mark.parametrize("whiteout", [".wh...", "sub/.wh...", ".wh..", "sub/.wh.."])
def test_whiteout_naming_dotdot_cannot_delete_outside_the_staging_root(
    process_node: Node, whiteout: str
) -> None:
    images = process_node.agent.runtime._images.root  # type: ignore[attr-defined]
    before = _tree(images / "rootfs")
    refs_before = process_node.agent.runtime.images()
    layer = _tar(("sub/keep", b"x"), (whiteout, b""))
    with pytest.raises(grpc.RpcError) as err:
        process_node.stub().ImportImage(
            _chunks(_archive(layer)), metadata=meta(process_node.token("image.import", REF))
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "whiteout" in (err.value.details() or "")
    # Nothing happened: no root filesystem changed, the import's own spool directory
    # (the staging root's parent) is still there and empty, and no ref was registered.
    assert _tree(images / "rootfs") == before
    assert (images / "tmp").is_dir() and list((images / "tmp").iterdir()) == []
    assert process_node.agent.runtime.images() == refs_before
