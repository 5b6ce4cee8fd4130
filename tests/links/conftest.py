"""Shared pieces of the data-plane tests: the workloads (busybox httpd serving a
marker file, and a client) and waiting helpers."""

from __future__ import annotations

import socket

from node.runtime.base import ContainerSpec, LinkSpec, PortSpec
from tests.control_api.conftest import orchestrator  # noqa: F401 - a fixture, used by name

TENANT_APP = "acme/shop"


def serving(
    name: str,
    marker: str,
    port: int = 5432,
    *,
    service: str = "db",
    publish: int = 0,
    app: str = TENANT_APP,
) -> ContainerSpec:
    """An instance of ``service`` answering HTTP on ``port`` with ``marker``."""
    script = (
        f"mkdir -p /tmp/www && echo {marker} > /tmp/www/index.html && "
        f"exec httpd -f -p {port} -h /tmp/www"
    )
    return ContainerSpec(
        name=name,
        workload_id=f"{app.replace('/', '.')}.{service}.0",
        image="local/busybox:1",
        command=("sh", "-c", script),
        service=f"{app}/{service}",
        ports=(PortSpec(port, publish),),
    )


def linking(
    name: str, links: tuple[LinkSpec, ...], *, service: str = "web", app: str = TENANT_APP
) -> ContainerSpec:
    return ContainerSpec(
        name=name,
        workload_id=f"{app.replace('/', '.')}.{service}.0",
        image="local/busybox:1",
        command=("sleep", "600"),
        service=f"{app}/{service}",
        links=links,
    )


def http_get(host: str, port: int, timeout: float = 5.0) -> bytes:
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
        out = b""
        while chunk := s.recv(65536):
            out += chunk
    return out


def fetch(host: str, port: int) -> tuple[str, ...]:
    """A command that GETs / from host:port inside a workload (busybox nc: its wget
    crashes in the static build)."""
    request = "GET / HTTP/1.0\\r\\nHost: x\\r\\n\\r\\n"
    return ("sh", "-c", f"printf '{request}' | nc -w 3 {host} {port}")


def answers_http(host: str, port: int, marker: bytes) -> bool:
    """True once ``host:port`` answers with ``marker`` (refused or reset: not yet)."""
    try:
        return marker in http_get(host, port, timeout=2)
    except OSError:
        return False
