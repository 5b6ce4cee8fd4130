"""``capstan run`` (no daemon) gives the same names and ports on one host: the shop
example answers on its published port, web reaching db through its link."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator.standalone import Standalone
from orchestrator.topology import load_topology_file
from tests.waiting import wait_for

ROOT = Path(__file__).resolve().parents[2]
HOST = "127.0.0.171"


def order(port: int = 18080) -> bytes:
    import socket

    try:
        with socket.create_connection((HOST, port), timeout=5) as s:
            s.sendall(b"GET / HTTP/1.0\r\nHost: shop\r\n\r\n")
            out = b""
            while chunk := s.recv(65536):
                out += chunk
        return out
    except OSError:
        return b""


@pytest.fixture(params=["process", pytest.param("docker", marks=pytest.mark.docker)])
def runner(
    request: pytest.FixtureRequest, tmp_path: Path, busybox_for: None
) -> Iterator[Standalone]:
    app = load_topology_file(ROOT / "examples" / "shop.yaml")
    with Standalone(app, runtime=request.param, home=tmp_path, publish_host=HOST) as r:
        try:
            r.up()
            yield r
        finally:
            r.down()


@pytest.fixture
def busybox_for(request: pytest.FixtureRequest) -> None:
    if "docker" in request.node.name:
        request.getfixturevalue("busybox_image")


def test_shop_answers_from_outside_through_web_to_db(runner: Standalone) -> None:
    wait_for(lambda: b"42 widgets" in order(), timeout=30, what="an order through web and db")
    answer = order()
    assert b"web asked db at 127." in answer
    # Spread over the three web instances on this host, each reaching db.
    for _ in range(6):
        assert b"42 widgets" in order()
