"""Each docker node's own view of images on one shared engine, and images moving
between nodes the way peer-to-peer distribution moves them."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import tarfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import docker
import docker.errors
import pytest

from node.errors import InvalidArgument, NotFound
from node.runtime._docker_archive import ImportedArchive, retag_export
from node.runtime._docker_names import namespace, node_ref, ref_of
from node.runtime.base import ContainerState
from node.runtime.docker import DockerRuntime
from node.runtime.process import ProcessRuntime

from .conftest import TEST_NODE_PREFIX, remove_node_containers, spec

BUSYBOX = "local/busybox:1"

Bare = Callable[[str], DockerRuntime]


@pytest.fixture
def bare(docker_client: docker.DockerClient, busybox_image: str, tmp_path: Path) -> Iterator[Bare]:
    """DockerRuntimes that start with no image at all; their tags dropped at the end."""
    run = uuid.uuid4().hex[:8]
    made: list[DockerRuntime] = []

    def make(suffix: str) -> DockerRuntime:
        runtime = DockerRuntime(
            f"{TEST_NODE_PREFIX}{run}-{suffix}", tmp_path / suffix, client=docker_client
        )
        made.append(runtime)
        return runtime

    try:
        yield make
    finally:
        for runtime in made:
            remove_node_containers(docker_client, runtime.node_id)
            runtime.forget_images()
            runtime.close()


@pytest.fixture
def global_tags(docker_client: docker.DockerClient) -> Iterator[Callable[[str, str], str]]:
    """``tag(image, ref)`` puts a global tag on the engine, removed at the end."""
    made: list[str] = []

    def tag(image: str, ref: str) -> str:
        repository, _, name_tag = ref.rpartition(":")
        assert docker_client.api.tag(image, repository, name_tag, force=True)
        made.append(ref)
        return ref

    try:
        yield tag
    finally:
        for ref in made:
            with contextlib.suppress(docker.errors.NotFound):
                docker_client.api.remove_image(ref, noprune=True)


def image_id(client: docker.DockerClient, ref: str) -> str:
    return str(client.api.inspect_image(ref)["Id"])


def members(archive: bytes) -> dict[str, bytes]:
    """The regular files of a (small) archive by name."""
    out: dict[str, bytes] = {}
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        for member in tar:
            fh = tar.extractfile(member) if member.isfile() else None
            if fh is not None:
                out[member.name] = fh.read()
    return out


def manifest(archive: bytes) -> list[dict[str, Any]]:
    doc: list[dict[str, Any]] = json.loads(members(archive)["manifest.json"])
    return doc


def pieces(data: bytes, size: int = 65536) -> Iterator[bytes]:
    return (data[i : i + size] for i in range(0, len(data), size))


def other_image_archive(tmp_path: Path, ref: str) -> bytes:
    """A docker-save archive naming ``ref`` whose content is not busybox's."""
    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w") as tar:
        info = tarfile.TarInfo("hello.txt")
        data = f"not busybox {uuid.uuid4().hex}\n".encode()
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    maker = ProcessRuntime("archive-maker", tmp_path / "archive-maker")
    try:
        maker.import_rootfs(ref, [layer.getvalue()])
        return b"".join(maker.image_export(ref))
    finally:
        maker.close()


# -- one engine, two nodes ------------------------------------------------------------


@pytest.mark.docker
def test_a_node_has_only_the_images_given_to_it(
    bare: Bare, docker_client: docker.DockerClient
) -> None:
    a, b = bare("a"), bare("b")
    assert a.adopt_image(BUSYBOX) == BUSYBOX

    assert a.images() == [BUSYBOX]
    assert a.image_exists(BUSYBOX)
    assert a.image_exists(image_id(docker_client, BUSYBOX))
    # The engine has the image; node b was never given it.
    assert b.images() == []
    assert not b.image_exists(BUSYBOX)
    assert not b.image_exists(image_id(docker_client, BUSYBOX))
    with pytest.raises(NotFound, match="not present on this node"):
        b.create(spec())
    assert b.list() == []
    with pytest.raises(NotFound):
        b.image_export(BUSYBOX)


@pytest.mark.docker
def test_export_to_another_node_then_run_there(
    bare: Bare, docker_client: docker.DockerClient
) -> None:
    a, b = bare("a"), bare("b")
    a.adopt_image(BUSYBOX)
    busybox_id = image_id(docker_client, BUSYBOX)

    archive = b"".join(a.image_export(BUSYBOX))
    files = members(archive)
    assert [entry["RepoTags"] for entry in manifest(archive)] == [[BUSYBOX]]
    assert manifest(archive)[0]["Config"] == busybox_id.removeprefix("sha256:") + ".json"
    # Nothing in the archive names the node-scoped tag it was saved under.
    assert all(namespace(a.node_id).encode() not in files[name] for name in files
               if not name.endswith("layer.tar"))
    assert list(json.loads(files["repositories"])) == ["local/busybox"]

    assert b.image_import(pieces(archive)) == [BUSYBOX]
    assert b.images() == [BUSYBOX]
    assert image_id(docker_client, b.node_image(BUSYBOX)) == busybox_id
    assert image_id(docker_client, BUSYBOX) == busybox_id  # the global tag did not move

    status = b.create(spec("hello", command=("sh", "-c", "echo hello from b")))
    assert status.image == BUSYBOX
    assert docker_client.api.inspect_container(b.docker_name("hello"))["Config"]["Image"] == (
        b.node_image(BUSYBOX)
    )
    b.start("hello")
    assert docker_client.api.wait(b.docker_name("hello"), timeout=60)["StatusCode"] == 0
    assert b"".join(b.logs("hello")) == b"hello from b\n"
    assert [c.image for c in b.list()] == [BUSYBOX]
    assert b.inspect("hello").state is ContainerState.EXITED


@pytest.mark.docker
def test_import_never_moves_a_global_tag(
    bare: Bare, docker_client: docker.DockerClient, tmp_path: Path
) -> None:
    a, b = bare("a"), bare("b")
    a.adopt_image(BUSYBOX)
    busybox_id = image_id(docker_client, BUSYBOX)
    impostor = other_image_archive(tmp_path, BUSYBOX)

    assert b.image_import([impostor]) == [BUSYBOX]
    imported = image_id(docker_client, b.node_image(BUSYBOX))
    assert imported != busybox_id
    # Neither the engine's tag nor node a's image changed.
    assert image_id(docker_client, BUSYBOX) == busybox_id
    assert image_id(docker_client, a.node_image(BUSYBOX)) == busybox_id
    assert [t for t in docker_client.api.inspect_image(imported)["RepoTags"]] == [
        b.node_image(BUSYBOX)
    ]


@pytest.mark.docker
def test_export_is_the_nodes_image_even_when_the_global_tag_moves(
    bare: Bare,
    docker_client: docker.DockerClient,
    global_tags: Callable[[str, str], str],
    tmp_path: Path,
) -> None:
    a, b = bare("a"), bare("b")
    ref = global_tags(BUSYBOX, f"local/capstan-test-{uuid.uuid4().hex[:8]}:1")
    a.adopt_image(ref)
    b.image_import([other_image_archive(tmp_path, ref)])
    # Another agent points the engine's tag at its own image: a's export is unmoved.
    global_tags(b.node_image(ref), ref)
    assert image_id(docker_client, ref) != image_id(docker_client, BUSYBOX)

    archive = b"".join(a.image_export(ref))
    assert manifest(archive) == [
        {
            "Config": image_id(docker_client, BUSYBOX).removeprefix("sha256:") + ".json",
            "RepoTags": [ref],
            "Layers": manifest(archive)[0]["Layers"],
        }
    ]


@pytest.mark.docker
@pytest.mark.parametrize(
    "name",
    [
        "localhost:5000/capstan-test-{run}/app:2",
        "registry.example.test:443/team/capstan-test-{run}",
        "localhost/capstan-test-{run}:v1.0",
        "Reg.Example.test:5000/capstan-test-{run}/x:1",
    ],
)
def test_refs_with_a_registry_travel_too(
    name: str,
    bare: Bare,
    docker_client: docker.DockerClient,
    global_tags: Callable[[str, str], str],
) -> None:
    ref = name.format(run=uuid.uuid4().hex[:8])
    tagged = ref if ":" in ref.rsplit("/", 1)[-1] else f"{ref}:latest"
    global_tags(BUSYBOX, tagged)
    a, b = bare("a"), bare("b")
    a.adopt_image(ref)
    assert a.images() == [tagged]
    assert a.image_exists(ref) and a.image_exists(tagged)

    archive = b"".join(a.image_export(ref))
    assert [entry["RepoTags"] for entry in manifest(archive)] == [[ref]]
    assert b.image_import([archive]) == [tagged]
    assert b.images() == [tagged]
    assert b.image_exists(ref)
    assert image_id(docker_client, b.node_image(ref)) == image_id(docker_client, BUSYBOX)


# -- refusals -------------------------------------------------------------------------


@pytest.mark.docker
def test_import_refusals_tag_nothing(
    bare: Bare, docker_client: docker.DockerClient
) -> None:
    a, b = bare("a"), bare("b")
    a.adopt_image(BUSYBOX)

    with pytest.raises(InvalidArgument) as err:
        b.image_import([b"this is not an image archive" * 100])
    assert err.value.field == "data"

    by_id = b"".join(a.image_export(image_id(docker_client, BUSYBOX)))
    assert [entry["RepoTags"] for entry in manifest(by_id)] == [None]
    with pytest.raises(InvalidArgument, match="without a name") as err:
        b.image_import([by_id])
    assert err.value.field == "data"

    no_manifest = io.BytesIO()
    with tarfile.open(fileobj=no_manifest, mode="w") as tar:
        info = tarfile.TarInfo("repositories")
        body = b'{"local/busybox":{"1":"0"}}'
        info.size = len(body)
        tar.addfile(info, io.BytesIO(body))
    with pytest.raises(InvalidArgument) as err:
        b.image_import([no_manifest.getvalue()])
    assert err.value.field == "data"

    with pytest.raises(InvalidArgument, match="must be bytes"):
        b.image_import(["text"])  # type: ignore[list-item]
    assert b.images() == []
    assert not b.image_exists(BUSYBOX)


@pytest.mark.docker
def test_an_archive_cannot_claim_another_image_by_file_name(
    bare: Bare, docker_client: docker.DockerClient, tmp_path: Path
) -> None:
    """The image id is the hash of the config bytes, never the name the archive gives
    them: an archive naming its config after busybox's id does not give b busybox."""
    b = bare("b")
    busybox_hex = image_id(docker_client, BUSYBOX).removeprefix("sha256:")
    files = members(other_image_archive(tmp_path, BUSYBOX))
    (entry,) = json.loads(files["manifest.json"])
    config = files.pop(entry["Config"])
    files[f"{busybox_hex}.json"] = config
    entry["Config"] = f"{busybox_hex}.json"
    files["manifest.json"] = json.dumps([entry]).encode()
    forged = io.BytesIO()
    with tarfile.open(fileobj=forged, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))

    assert b.image_import([forged.getvalue()]) == [BUSYBOX]
    assert image_id(docker_client, b.node_image(BUSYBOX)) != "sha256:" + busybox_hex
    assert not b.image_exists("sha256:" + busybox_hex)


@pytest.mark.docker
def test_adopt_and_lookup_refusals(bare: Bare) -> None:
    a = bare("a")
    with pytest.raises(NotFound):
        a.adopt_image(f"local/never-built-{uuid.uuid4().hex[:8]}:1")
    with pytest.raises(InvalidArgument) as err:
        a.adopt_image("local/busybox@sha256:" + "0" * 64)
    assert err.value.field == "ref"
    with pytest.raises(InvalidArgument) as err:
        a.adopt_image("UPPER/case")
    assert err.value.field == "ref"
    with pytest.raises(InvalidArgument) as err:
        a.adopt_image("sha256:" + "0" * 64)
    assert err.value.field == "ref"
    assert a.images() == []
    assert not a.image_exists("local/busybox@sha256:" + "0" * 64)


@pytest.mark.docker
def test_forget_images_drops_only_this_nodes_tags(
    bare: Bare, docker_client: docker.DockerClient
) -> None:
    a, b = bare("a"), bare("b")
    a.adopt_image(BUSYBOX)
    b.adopt_image(BUSYBOX)
    assert a.forget_images() == [BUSYBOX]
    assert a.images() == []
    assert b.images() == [BUSYBOX]
    assert image_id(docker_client, BUSYBOX)  # the engine's own tag stays


# -- the name mapping -----------------------------------------------------------------

REFS = [
    "busybox",
    "busybox:1",
    "local/busybox:1",
    "a__b/c",
    "localhost__5000/a",
    "localhost/a",
    "localhost:5000/a",
    "localhost:5000/a/b:Tag_1.x",
    "foo:5000/bar",
    "foo.bar:1",
    "foo.bar/baz",
    "r.foo/bar",
    "example.com/library/app",
    "Example.com/library/app",
    "EXAMPLE.COM:80/app",
    "docker.io/library/busybox:1",
]


def test_node_refs_round_trip_and_never_collide() -> None:
    prefix = namespace("spiffe://t.capstan/node/n1")
    scoped: dict[str, set[str]] = {}
    for ref in REFS:
        tagged = ref if ":" in ref.rsplit("/", 1)[-1] else f"{ref}:latest"
        name = node_ref(prefix, ref)
        assert name.startswith(prefix)
        assert ref_of(prefix, name) == tagged
        scoped.setdefault(name, set()).add(tagged)
    # Distinct refs (a ref and its explicit :latest aside) map to distinct tags.
    assert all(len(refs) == 1 for refs in scoped.values())
    assert len(scoped) == len(REFS)
    assert node_ref(prefix, "busybox") == node_ref(prefix, "busybox:latest")


def test_node_refs_are_per_node_and_refuse_foreign_tags() -> None:
    one, two = namespace("node-1"), namespace("node-2")
    assert one != two
    assert ref_of(two, node_ref(one, BUSYBOX)) is None
    assert ref_of(one, BUSYBOX) is None
    for hand_made in ("r.nodots/app:1", "r.xzz/app:1", "r.x41/app:1", "UPPER/x:1"):
        assert ref_of(one, one + hand_made) is None
    with pytest.raises(InvalidArgument) as err:
        node_ref(one, "a/" + "b" * 250)
    assert err.value.field == "ref"


# -- archive rewriting, with the OCI files of newer engines (no engine needed) ------------


def synthetic_archive(saved: str) -> bytes:
    """Shaped like ``docker save`` of a newer engine: OCI index plus the legacy files."""
    config = b'{"rootfs":{"type":"layers","diff_ids":[]}}'
    files = {
        "blobs/sha256/layer0": b"layer bytes" * 1000,
        "blobs/sha256/cfg": config,
        "manifest.json": json.dumps(
            [{"Config": "blobs/sha256/cfg", "RepoTags": [saved], "Layers": []}]
        ).encode(),
        "repositories": json.dumps({saved.rsplit(":", 1)[0]: {"1": "cfg"}}).encode(),
        "index.json": json.dumps(
            {
                "schemaVersion": 2,
                "manifests": [
                    {
                        "digest": "sha256:m",
                        "annotations": {
                            "io.containerd.image.name": f"docker.io/{saved}",
                            "org.opencontainers.image.ref.name": "1",
                        },
                    }
                ],
            }
        ).encode(),
    }
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def test_export_rewrites_every_file_that_names_the_image() -> None:
    saved = node_ref(namespace("node-1"), "localhost:5000/app:1")
    exported = retag_export(pieces(synthetic_archive(saved), 700), "localhost:5000/app:1")
    out = members(b"".join(exported))
    assert json.loads(out["manifest.json"])[0]["RepoTags"] == ["localhost:5000/app:1"]
    assert json.loads(out["repositories"]) == {"localhost:5000/app": {"1": "cfg"}}
    notes = json.loads(out["index.json"])["manifests"][0]["annotations"]
    assert notes == {
        "io.containerd.image.name": "localhost:5000/app:1",
        "org.opencontainers.image.ref.name": "1",
    }
    assert out["blobs/sha256/layer0"] == b"layer bytes" * 1000


def test_import_strips_every_name_and_hashes_the_config() -> None:
    archive = ImportedArchive(pieces(synthetic_archive(BUSYBOX), 1000))
    out = members(b"".join(archive.stream()))
    assert sorted(out) == ["blobs/sha256/cfg", "blobs/sha256/layer0", "manifest.json"]
    assert json.loads(out["manifest.json"])[0]["RepoTags"] == []
    digest = hashlib.sha256(out["blobs/sha256/cfg"]).hexdigest()
    assert archive.images() == [("sha256:" + digest, [BUSYBOX])]
