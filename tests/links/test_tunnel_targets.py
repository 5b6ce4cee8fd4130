"""Which local instances a tunnel may reach: exactly the service and a port it
declared, and never an instance sharing the node's own network namespace (there,
127.0.0.1:port could be anything of the node)."""

from __future__ import annotations

from pathlib import Path

from node.audit import NodeAudit
from node.links import LinkManager
from node.runtime.base import ContainerState, ContainerStatus, NetSpec, PortSpec


class _Runtime:
    """Reports running instances with the given network specs (nothing else is asked)."""

    name = "fake"
    node_id = "spiffe://links.test/node/n"

    def __init__(self, nets: dict[str, NetSpec]) -> None:
        self.nets = nets

    def list(self) -> list[ContainerStatus]:
        return [ContainerStatus(n, "w", "i", ContainerState.RUNNING) for n in self.nets]

    def net_spec(self, name: str) -> NetSpec | None:
        return self.nets.get(name)


def net(service: str, port: int, *, isolated: bool) -> NetSpec:
    # (/proc/self/ns/net stands for an instance's own namespace: only the flag matters)
    return NetSpec("/proc/self/ns/net", isolated, service, (PortSpec(port),), ())


def test_only_isolated_instances_of_exactly_that_service_and_port(tmp_path: Path) -> None:
    runtime = _Runtime(
        {
            "db-own-ns": net("acme/shop/db", 5432, isolated=True),
            "db-node-ns": net("acme/shop/db", 5432, isolated=False),
            "db-other-port": net("acme/shop/db", 6432, isolated=True),
            "web": net("acme/shop/web", 5432, isolated=True),
            "other-tenant-db": net("evil/shop/db", 5432, isolated=True),
        }
    )
    links = LinkManager(
        runtime,  # type: ignore[arg-type]
        node_id=runtime.node_id,
        publish_host="127.0.0.1",
        audit=NodeAudit(tmp_path / "audit.jsonl"),
        revoked=frozenset,
    )
    try:
        links.sync()
        assert [i.name for i in links.tunnel_targets("acme/shop/db", 5432)] == ["db-own-ns"]
        assert [i.name for i in links.tunnel_targets("acme/shop/db", 6432)] == ["db-other-port"]
        assert links.tunnel_targets("acme/shop/db", 22) == []
        assert links.tunnel_targets("acme/other/db", 5432) == []
    finally:
        links.stop()
