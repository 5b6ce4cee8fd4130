"""The busybox image builder shared by `capstan up`, `capstan run` and the test suite."""

from __future__ import annotations

import contextlib
import io
import secrets
import tarfile
from pathlib import Path

import docker
import docker.errors
import pytest

from node.errors import FailedPrecondition, NotFound
from node.runtime.images import busybox_binary, busybox_rootfs, ensure_docker_busybox, ensure_image
from node.runtime.process import ProcessRuntime

pytestmark = pytest.mark.skipif(busybox_binary() is None, reason="needs a static busybox")


def test_rootfs_holds_busybox_and_applet_links() -> None:
    with tarfile.open(fileobj=io.BytesIO(busybox_rootfs()), mode="r") as tar:
        members = {m.name: m for m in tar.getmembers()}
    assert members["bin/busybox"].isfile()
    assert members["bin/busybox"].uid == 0
    assert members["bin/sh"].issym() and members["bin/sh"].linkname == "busybox"
    assert members["tmp"].isdir() and members["tmp"].mode == 0o1777
    # busybox lists itself; a link of that name would have replaced the binary.
    assert [n for n in members if n == "bin/busybox"] == ["bin/busybox"]


def test_rootfs_refuses_a_missing_binary(tmp_path: Path) -> None:
    with pytest.raises(FailedPrecondition, match="no busybox binary"):
        busybox_rootfs(tmp_path / "busybox")


def test_process_runtime_gets_the_image_once(tmp_path: Path) -> None:
    rt = ProcessRuntime("spiffe://t.capstan/node/img", tmp_path / "state")
    try:
        assert not rt.image_exists("local/busybox:1")
        assert ensure_image(rt) == "local/busybox:1"
        assert rt.image_exists("local/busybox:1")
        assert ensure_image(rt) == "local/busybox:1"  # present: nothing rebuilt
        with pytest.raises(NotFound, match="no registry"):
            ensure_image(rt, "example/other:1")
        assert not rt.image_exists("example/other:1")
    finally:
        rt.close()


@pytest.mark.docker
def test_docker_import_under_another_tag(docker_client: docker.DockerClient) -> None:
    ref = f"local/busybox-clitest-{secrets.token_hex(4)}:1"
    try:
        assert ensure_docker_busybox(ref) == ref
        image = docker_client.images.get(ref)
        assert "PATH=/bin" in image.attrs["Config"]["Env"]
        out = docker_client.containers.run(ref, ["sh", "-c", "echo ok"], remove=True,
                                           network_mode="none")
        assert out.strip() == b"ok"
        assert ensure_docker_busybox(ref) == ref  # already there
    finally:
        with contextlib.suppress(docker.errors.ImageNotFound):
            docker_client.images.remove(ref, force=True)
