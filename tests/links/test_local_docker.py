"""Links and published ports on one node, real Docker (network none): a linking
container reaches a linked service by name, nothing else; a published port reaches
the instance from the node's address."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from node.audit import NodeAudit
from node.links import LinkManager
from node.runtime.base import LinkSpec
from node.runtime.docker import DockerRuntime
from orchestrator.links import link_address
from tests.links.conftest import answers_http, fetch, http_get, linking, serving
from tests.waiting import wait_for

pytestmark = pytest.mark.docker

DB = LinkSpec("db", link_address("acme", "shop", "db"), (5432,), "acme/shop/db")


@pytest.fixture
def node(tmp_path: Path, docker_client: docker.DockerClient, busybox_image: str) -> Iterator[Any]:
    rt = DockerRuntime("spiffe://links.test/node/local-docker", tmp_path)
    rt.adopt_image(busybox_image)
    links = LinkManager(
        rt,
        node_id=rt.node_id,
        publish_host="127.0.0.141",
        audit=NodeAudit(tmp_path / "audit.jsonl"),
        revoked=frozenset,
        interval=0.1,
    )
    links.start()
    try:
        yield rt, links, docker_client
    finally:
        links.stop()
        for c in rt.list():
            rt.remove(c.name, force=True)
        rt.close()


def run(rt: DockerRuntime, spec: Any) -> None:
    rt.create(spec)
    rt.start(spec.name)


def exec_in(
    client: docker.DockerClient, rt: DockerRuntime, name: str, *cmd: str
) -> tuple[int, bytes]:
    result = client.containers.get(rt.docker_name(name)).exec_run(list(cmd))
    return result.exit_code, result.output


def test_a_linked_service_answers_by_name(node: Any) -> None:
    rt, links, client = node
    run(rt, serving("db-0", "db-answer"))
    run(rt, linking("web-0", (DB,)))
    wait_for(lambda: len(links.listeners("web-0")) == 1, what="the link listener")
    # (db's httpd may take a moment to listen)
    wait_for(
        lambda: exec_in(client, rt, "web-0", *fetch("db", 5432))[1].strip().endswith(b"db-answer"),
        what="db answering web by name",
    )
    # The container is on network none: the name resolves to its own loopback.
    _, out = exec_in(client, rt, "web-0", "cat", "/etc/hosts")
    assert f"{DB.address}\tdb".encode() in out


def test_an_unlinked_container_reaches_nothing(node: Any) -> None:
    rt, links, client = node
    run(rt, serving("db-0", "db-answer"))
    run(rt, linking("other-0", (), service="other"))
    run(rt, linking("web-0", (DB,)))
    wait_for(lambda: len(links.listeners("web-0")) == 1, what="the link listener")
    for host in ("db", DB.address, "127.0.0.1"):
        _, out = exec_in(client, rt, "other-0", *fetch(host, 5432))
        assert b"db-answer" not in out, host


def test_published_port_reaches_the_instance(node: Any) -> None:
    rt, links, _ = node
    run(rt, serving("web-0", "web-answer", 8080, service="web", publish=18080))
    wait_for(lambda: len(links.listeners("web-0")) == 1, what="the published listener")
    wait_for(lambda: answers_http("127.0.0.141", 18080, b"web-answer"), what="an answer")
    rt.stop("web-0", timeout=0)
    wait_for(lambda: not links.listeners("web-0"), what="the listener to close")
    with pytest.raises(OSError):
        http_get("127.0.0.141", 18080, timeout=2)
