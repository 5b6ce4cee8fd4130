"""Session fixtures shared by the whole suite: the Docker Engine and the busybox image.

Without a Docker Engine the tests that need one are skipped, unless
CAPSTAN_REQUIRE_DOCKER=1 (CI on a machine that has one), which turns the skip into a
failure so a broken engine cannot pass silently.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import tarfile
from collections.abc import Iterator

import docker
import docker.errors
import pytest
import requests.exceptions

BUSYBOX_IMAGE = "local/busybox:1"
BUSYBOX_BINARY = "/bin/busybox"  # Debian's busybox-static: no shared libraries needed


def _docker_required() -> bool:
    return os.environ.get("CAPSTAN_REQUIRE_DOCKER", "") == "1"


@pytest.fixture(scope="session")
def docker_client() -> Iterator[docker.DockerClient]:
    """A client of the local Docker Engine; skips (or fails, if required) without one."""
    try:
        client = docker.from_env(timeout=30)
        client.ping()
    except (docker.errors.DockerException, requests.exceptions.RequestException, OSError) as exc:
        message = f"no Docker Engine answers: {exc}"
        if _docker_required():
            pytest.fail(message + " (CAPSTAN_REQUIRE_DOCKER=1)")
        pytest.skip(message)
    try:
        yield client
    finally:
        client.close()


def _busybox_rootfs() -> bytes:
    """A tarball of /bin/busybox plus one symlink per applet, as ``docker import`` wants."""
    busybox = shutil.which("busybox") or BUSYBOX_BINARY
    applets = subprocess.run(
        [busybox, "--list"], check=True, capture_output=True, text=True
    ).stdout.split()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.add(busybox, arcname="bin/busybox")
        for applet in sorted(set(applets)):
            if applet == "busybox" or "/" in applet:
                continue  # --list names busybox itself: a link to itself would loop
            link = tarfile.TarInfo(f"bin/{applet}")
            link.type = tarfile.SYMTYPE
            link.linkname = "busybox"
            link.mode = 0o777
            tar.addfile(link)
        tmp = tarfile.TarInfo("tmp")
        tmp.type = tarfile.DIRTYPE
        tmp.mode = 0o1777
        tar.addfile(tmp)
    return buf.getvalue()


@pytest.fixture(scope="session")
def busybox_image(docker_client: docker.DockerClient) -> str:
    """``local/busybox:1``, built from the host's static busybox when missing."""
    try:
        docker_client.images.get(BUSYBOX_IMAGE)
        return BUSYBOX_IMAGE
    except docker.errors.ImageNotFound:
        pass
    if not (shutil.which("busybox") or os.path.exists(BUSYBOX_BINARY)):
        message = f"{BUSYBOX_IMAGE} is missing and no busybox binary is installed to build it"
        if _docker_required():
            pytest.fail(message)
        pytest.skip(message)
    repository, tag = BUSYBOX_IMAGE.rsplit(":", 1)
    docker_client.api.import_image_from_data(
        _busybox_rootfs(), repository=repository, tag=tag, changes=["ENV PATH=/bin"]
    )
    docker_client.images.get(BUSYBOX_IMAGE)  # fails loudly if the import did not tag it
    return BUSYBOX_IMAGE
