"""Image store of the process runtime: import, export, peer transfer, hostile archives."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from node.errors import InvalidArgument, NotFound
from node.runtime.base import ContainerState
from node.runtime.process import ProcessRuntime, ensure_busybox_image
from tests.waiting import wait_for

from .conftest import busybox_rootfs, kill_recorded, log_text, spec


@pytest.fixture
def empty_runtime(tmp_path: Path) -> Iterator[ProcessRuntime]:
    state = tmp_path / "empty"
    rt = ProcessRuntime("node-empty", state)
    try:
        yield rt
    finally:
        kill_recorded(state)
        rt.close()


def entry(
    name: str,
    data: bytes = b"",
    *,
    kind: bytes = tarfile.REGTYPE,
    link: str = "",
    mode: int = 0o644,
) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = link
    info.mode = mode
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    return info


def layer(*members: tuple[tarfile.TarInfo, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return buf.getvalue()


def save_archive(
    layers: list[bytes], tags: list[str], *, diff_ids: list[str] | None = None
) -> bytes:
    """A docker-save archive with the given uncompressed layers."""
    ids = diff_ids or ["sha256:" + hashlib.sha256(x).hexdigest() for x in layers]
    config = json.dumps(
        {"os": "linux", "config": {}, "rootfs": {"type": "layers", "diff_ids": ids}}
    )
    config_name = hashlib.sha256(config.encode()).hexdigest() + ".json"
    names = [f"layer{i}/layer.tar" for i in range(len(layers))]
    manifest = json.dumps([{"Config": config_name, "RepoTags": tags, "Layers": names}])
    files = [("manifest.json", manifest.encode()), (config_name, config.encode())]
    files += list(zip(names, layers, strict=True))
    return layer(*((entry(n, d), d) for n, d in files))


def refs_of(rt: ProcessRuntime) -> dict[str, str]:
    return rt._images.refs()


def test_busybox_image_round_trip_between_nodes(
    empty_runtime: ProcessRuntime, tmp_path: Path
) -> None:
    assert ensure_busybox_image(empty_runtime) == "local/busybox:1"
    image_id = refs_of(empty_runtime)["local/busybox:1"]
    rootfs = empty_runtime._images.rootfs_dir(image_id)
    assert (rootfs / "bin" / "busybox").is_file() and not (rootfs / "bin" / "busybox").is_symlink()
    assert os.readlink(rootfs / "bin" / "ls") == "busybox"
    assert ensure_busybox_image(empty_runtime) == "local/busybox:1"  # already there: no-op

    archive = b"".join(empty_runtime.image_export("local/busybox:1"))
    peer_dir = tmp_path / "peer"
    peer = ProcessRuntime("node-peer", peer_dir)
    try:
        assert not peer.image_exists("local/busybox:1")
        assert peer.image_import(iter([archive[:1000], archive[1000:]])) == ["local/busybox:1"]
        assert refs_of(peer) == {"local/busybox:1": image_id}  # same content, same id
        peer.create(spec("hello", "sh", "-c", "echo hello from peer"))
        peer.start("hello")
        wait_for(lambda: peer.inspect("hello").state is ContainerState.EXITED, what="exit")
        assert log_text(peer, "hello") == "hello from peer\n"
        # And back: the peer's export is the same archive.
        assert b"".join(peer.image_export("local/busybox:1")) == archive
    finally:
        kill_recorded(peer_dir)
        peer.close()


def test_rootfs_import_is_content_addressed(empty_runtime: ProcessRuntime) -> None:
    plain = busybox_rootfs(("sh",))
    assert empty_runtime.import_rootfs("local/a:1", [plain]) == ["local/a:1"]
    assert empty_runtime.import_rootfs("local/b", [gzip.compress(plain)]) == ["local/b:latest"]
    refs = refs_of(empty_runtime)
    assert refs["local/a:1"] == refs["local/b:latest"]
    assert empty_runtime.image_exists("local/b")
    assert empty_runtime.image_exists(refs["local/a:1"])  # by id too


def test_plain_rootfs_needs_a_ref(empty_runtime: ProcessRuntime) -> None:
    with pytest.raises(InvalidArgument, match=r"manifest\.json"):
        empty_runtime.image_import([busybox_rootfs(("sh",))])
    with pytest.raises(InvalidArgument, match="not a tar"):
        empty_runtime.image_import([b"definitely not a tar archive" * 30])
    with pytest.raises(InvalidArgument) as bad_ref:
        empty_runtime.import_rootfs("UPPER/case", [busybox_rootfs(("sh",))])
    assert bad_ref.value.field == "image"
    assert refs_of(empty_runtime) == {}


def test_tampered_layer_is_refused(empty_runtime: ProcessRuntime) -> None:
    good = layer((entry("hello.txt", b"hello"), b"hello"))
    evil = layer((entry("hello.txt", b"HELLO"), b"HELLO"))
    declared = ["sha256:" + hashlib.sha256(good).hexdigest()]
    with pytest.raises(InvalidArgument, match="digest"):
        empty_runtime.image_import([save_archive([evil], ["local/t:1"], diff_ids=declared)])
    assert refs_of(empty_runtime) == {}
    assert os.listdir(empty_runtime.state_dir / "images" / "rootfs") == []
    assert os.listdir(empty_runtime.state_dir / "images" / "blobs" / "sha256") == []


@pytest.mark.parametrize(
    "members",
    [
        [(entry("../escape.txt", b"x"), b"x")],
        [(entry("up", kind=tarfile.SYMTYPE, link="../../../../.."), b"")],
        [(entry("hard", kind=tarfile.LNKTYPE, link="../../../../../etc/hostname"), b"")],
    ],
    ids=["dotdot-path", "symlink-outside", "hardlink-outside"],
)
def test_escaping_layers_are_refused(
    empty_runtime: ProcessRuntime, tmp_path: Path, members: list[tuple[tarfile.TarInfo, bytes]]
) -> None:
    before = sorted(os.listdir(tmp_path))
    with pytest.raises(InvalidArgument):
        empty_runtime.image_import([save_archive([layer(*members)], ["local/evil:1"])])
    assert not empty_runtime.image_exists("local/evil:1")
    assert sorted(os.listdir(tmp_path)) == before
    assert os.listdir(empty_runtime.state_dir / "images" / "rootfs") == []


def test_layer_contents_are_defused(empty_runtime: ProcessRuntime) -> None:
    members = layer(
        (entry("bin", kind=tarfile.DIRTYPE, mode=0o755), b""),
        (entry("bin/tool", b"#!x", mode=0o4755), b"#!x"),
        (entry("bin/hostsh", kind=tarfile.SYMTYPE, link="/bin/tool"), b""),
        (entry("etc", kind=tarfile.DIRTYPE, mode=0o755), b""),
        (entry("etc/conf", kind=tarfile.SYMTYPE, link="/etc/passwd"), b""),
        (entry("dev/null", kind=tarfile.CHRTYPE), b""),
        (entry("slash", kind=tarfile.SYMTYPE, link="/"), b""),
        (entry("slash/tmp/through-link", b"x"), b"x"),
    )
    empty_runtime.image_import([save_archive([members], ["local/defused:1"])])
    root = empty_runtime._images.rootfs_dir(refs_of(empty_runtime)["local/defused:1"])
    assert (root / "bin" / "tool").stat().st_mode & 0o7777 == 0o755  # setuid stripped
    assert os.readlink(root / "bin" / "hostsh") == "tool"  # absolute link kept inside
    assert os.readlink(root / "etc" / "conf") == "passwd"
    assert not os.path.realpath(root / "etc" / "conf").startswith("/etc/")
    assert not (root / "dev" / "null").exists()  # device nodes are not created
    # A link to "/" means the image's root: writing through it stays in the image.
    assert os.readlink(root / "slash") == "."
    assert (root / "tmp" / "through-link").read_bytes() == b"x"
    assert not Path("/tmp/through-link").exists()


def test_whiteouts_between_layers(empty_runtime: ProcessRuntime) -> None:
    lower = layer(
        (entry("etc/a", b"a"), b"a"),
        (entry("etc/b", b"b"), b"b"),
        (entry("d/x", b"x"), b"x"),
    )
    upper = layer(
        (entry("etc/.wh.a"), b""),
        (entry("d/.wh..wh..opq"), b""),
        (entry("d/y", b"y"), b"y"),
    )
    empty_runtime.image_import([save_archive([lower, upper], ["local/layers:1"])])
    root = empty_runtime._images.rootfs_dir(refs_of(empty_runtime)["local/layers:1"])
    assert sorted(os.listdir(root / "etc")) == ["b"]
    assert sorted(os.listdir(root / "d")) == ["y"]
    # The export keeps both layers, and a peer rebuilds the same tree.
    archive = b"".join(empty_runtime.image_export("local/layers:1"))
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        manifest = json.loads(tar.extractfile("manifest.json").read())  # type: ignore[union-attr]
    assert len(manifest[0]["Layers"]) == 2 and manifest[0]["RepoTags"] == ["local/layers:1"]


def test_unknown_and_oversized(tmp_path: Path) -> None:
    rt = ProcessRuntime("node-small", tmp_path / "small", max_image_bytes=64 * 1024)
    try:
        with pytest.raises(NotFound):
            rt.image_export("local/nothing:1")
        with pytest.raises(InvalidArgument):
            rt.image_export("Not A Ref")
        with pytest.raises(InvalidArgument, match="exceeds"):
            rt.import_rootfs("local/big:1", [b"\0" * 40_000, b"\0" * 40_000])
        assert refs_of(rt) == {}
        assert os.listdir(tmp_path / "small" / "images" / "tmp") == []
    finally:
        rt.close()


def _docker_ok() -> bool:
    try:
        return (
            subprocess.run(
                ["docker", "info"], check=False, capture_output=True, timeout=10
            ).returncode
            == 0
        )
    except (OSError, subprocess.SubprocessError):
        return False


@pytest.fixture
def docker_cli() -> None:
    if not _docker_ok():
        if os.environ.get("CAPSTAN_REQUIRE_DOCKER") == "1":
            pytest.fail("no Docker Engine answers")
        pytest.skip("no Docker Engine answers")


@pytest.mark.docker
@pytest.mark.usefixtures("docker_cli")
def test_docker_save_and_load_interoperate(empty_runtime: ProcessRuntime) -> None:
    saved = subprocess.run(
        ["docker", "save", "local/busybox:1"], capture_output=True, check=True, timeout=60
    ).stdout
    assert empty_runtime.image_import([saved]) == ["local/busybox:1"]
    empty_runtime.create(spec("from-docker", "sh", "-c", "echo ok"))
    empty_runtime.start("from-docker")
    wait_for(lambda: empty_runtime.inspect("from-docker").state is ContainerState.EXITED)
    assert log_text(empty_runtime, "from-docker") == "ok\n"

    tag = f"capstan-test/process-export:{os.getpid()}"
    empty_runtime.import_rootfs(tag, [busybox_rootfs(("sh", "echo"))], env=(("PATH", "/bin"),))
    archive = b"".join(empty_runtime.image_export(tag))
    try:
        loaded = subprocess.run(
            ["docker", "load"], input=archive, capture_output=True, check=True, timeout=60
        )
        assert tag in loaded.stdout.decode()
        out = subprocess.run(
            ["docker", "run", "--rm", "--network", "none", tag, "echo", "loaded"],
            capture_output=True,
            check=True,
            timeout=60,
        )
        assert out.stdout == b"loaded\n"
    finally:
        subprocess.run(["docker", "rmi", "-f", tag], check=False, capture_output=True, timeout=60)


def test_layer_member_path_with_a_nul_byte_is_invalid_argument(tmp_path: Path) -> None:
    # Regression (found by bench/fuzz.py): a pax path holding a NUL reached the path
    # functions as ValueError, an INTERNAL error; the archive's fault, nothing stored.
    from node.runtime._process_images import ImageStore

    member = tarfile.TarInfo("x")
    member.pax_headers = {"path": "a\x00b"}
    layer_buf = io.BytesIO()
    with tarfile.open(fileobj=layer_buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        tar.addfile(member)
    layer = layer_buf.getvalue()
    diff = "sha256:" + hashlib.sha256(layer).hexdigest()
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {},
            "rootfs": {"type": "layers", "diff_ids": [diff]},
        }
    ).encode()
    config_name = hashlib.sha256(config).hexdigest() + ".json"
    manifest = json.dumps(
        [{"Config": config_name, "RepoTags": ["local/nul:1"], "Layers": ["l.tar"]}]
    ).encode()
    outer = io.BytesIO()
    with tarfile.open(fileobj=outer, mode="w") as tar:
        for name, data in (("manifest.json", manifest), (config_name, config), ("l.tar", layer)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    store = ImageStore(tmp_path / "images")
    with pytest.raises(InvalidArgument, match="embedded null byte"):
        store.import_archive([outer.getvalue()])
    assert store.refs() == {}
