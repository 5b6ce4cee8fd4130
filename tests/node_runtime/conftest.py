"""Fixtures for the runtime, volume and validation tests.

Docker tests get runtimes with node ids unique to the test, each given the busybox
image; every container carrying one of those node ids is force-removed, and every
image tag of those nodes dropped, when the test ends.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from node.runtime.base import ContainerSpec
from node.runtime.docker import DockerRuntime

# Shaped like the node ids the agent really uses: its certificate's SPIFFE id.
TEST_NODE_PREFIX = "spiffe://capstan.test/node/test-"

MakeRuntime = Callable[[str], DockerRuntime]


def remove_node_containers(client: docker.DockerClient, node_id: str) -> None:
    for summary in client.api.containers(
        all=True, filters={"label": [f"capstan.node={node_id}"]}
    ):
        client.api.remove_container(summary["Id"], force=True)


@pytest.fixture
def make_runtime(
    docker_client: docker.DockerClient, busybox_image: str, tmp_path: Path
) -> Iterator[MakeRuntime]:
    """Factory of DockerRuntimes for this test; ``make_runtime("a")`` is node ``...-a``."""
    run = uuid.uuid4().hex[:8]
    made: list[DockerRuntime] = []

    def make(suffix: str) -> DockerRuntime:
        node_id = f"{TEST_NODE_PREFIX}{run}-{suffix}"
        runtime = DockerRuntime(node_id, tmp_path / suffix, client=docker_client)
        made.append(runtime)
        runtime.adopt_image(busybox_image)
        return runtime

    try:
        yield make
    finally:
        for runtime in made:
            remove_node_containers(docker_client, runtime.node_id)
            runtime.forget_images()
            runtime.close()


@pytest.fixture
def runtime(make_runtime: MakeRuntime) -> DockerRuntime:
    return make_runtime("a")


def spec(name: str = "web", **fields: Any) -> ContainerSpec:
    """A busybox container spec with test defaults; keyword arguments override fields."""
    values: dict[str, Any] = {
        "name": name,
        "workload_id": f"test/{name}",
        "image": "local/busybox:1",
        "command": ("sleep", "300"),
    }
    values.update(fields)
    return ContainerSpec(**values)


def docker_attrs(client: docker.DockerClient, runtime: DockerRuntime, name: str) -> dict[str, Any]:
    """What `docker inspect` says about one of the runtime's containers."""
    attrs: dict[str, Any] = client.api.inspect_container(runtime.docker_name(name))
    return attrs


def wait_exit(client: docker.DockerClient, runtime: DockerRuntime, name: str) -> int:
    """Block until the container exits (Docker's own wait, no polling); its exit code."""
    result = client.api.wait(runtime.docker_name(name), timeout=60)
    return int(result["StatusCode"])
