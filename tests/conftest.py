"""Session fixtures shared by the whole suite: the Docker Engine and the busybox image.

Without a Docker Engine the tests that need one are skipped, unless
CAPSTAN_REQUIRE_DOCKER=1 (CI on a machine that has one), which turns the skip into a
failure so a broken engine cannot pass silently.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import docker
import docker.errors
import pytest
import requests.exceptions

from node.runtime.images import BUSYBOX_IMAGE, busybox_binary, ensure_docker_busybox


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


@pytest.fixture(scope="session")
def busybox_image(docker_client: docker.DockerClient) -> str:
    """``local/busybox:1``, built from the host's static busybox when missing."""
    try:
        docker_client.images.get(BUSYBOX_IMAGE)
        return BUSYBOX_IMAGE
    except docker.errors.ImageNotFound:
        pass
    if busybox_binary() is None:
        message = f"{BUSYBOX_IMAGE} is missing and no busybox binary is installed to build it"
        if _docker_required():
            pytest.fail(message)
        pytest.skip(message)
    return ensure_docker_busybox(BUSYBOX_IMAGE)
