"""A real cluster for attack tests: an in-process orchestrator (grpc.aio, SQLite) and
node agents joined through the real join flow on 127.0.0.x, process runtime."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest

from node.agent import JoinedNode, run_joined_node
from node.join import JoinOptions, ensure_joined
from node.runtime.process import ProcessRuntime, ensure_busybox_image
from protos import control_pb2, control_pb2_grpc, gateway_pb2_grpc, node_pb2_grpc
from protos.wire.channel import client_credentials
from tests.control_api.conftest import Running, start_orchestrator, stop_orchestrator
from tests.waiting import wait_for


@dataclass
class Cluster:
    orch: Running
    root: Path
    nodes: dict[str, JoinedNode] = field(default_factory=dict)

    def admin(self) -> control_pb2_grpc.ControlServiceStub:
        return self.orch.control("admin", "admin")

    def node_files(self, name: str) -> tuple[Path, Path, Path]:
        d = self.root / name
        return d / "node.crt", d / "node.key", d / "ca.crt"

    def node_credentials(self, name: str) -> grpc.ChannelCredentials:
        crt, key, ca = self.node_files(name)
        return client_credentials(crt.read_bytes(), key.read_bytes(), ca.read_bytes())

    def as_node(self, name: str) -> gateway_pb2_grpc.NodeGatewayStub:
        """The NodeGateway, called with node ``name``'s own certificate (a compromised node)."""
        channel = grpc.secure_channel(self.orch.target, self.node_credentials(name))
        return gateway_pb2_grpc.NodeGatewayStub(channel)

    def node_stub(self, caller: str, target: str) -> node_pb2_grpc.NodeServiceStub:
        """Node ``caller`` calling node ``target``'s NodeService with its own certificate."""
        address = self.nodes[target].listening
        return node_pb2_grpc.NodeServiceStub(
            grpc.secure_channel(address, self.node_credentials(caller))
        )

    def audit(self) -> list[dict[str, Any]]:
        return self.orch.run(self.orch.orch.audit.entries())  # type: ignore[return-value]

    def workloads(self) -> list[control_pb2.Workload]:
        return list(self.admin().ListWorkloads(control_pb2.WorkloadFilter()).workloads)


def join_node(
    c: Cluster,
    name: str,
    ip: str,
    *,
    mode: str = "push",
    pool: str = "",
    runtime: str = "process",
    grant: control_pb2.JoinTokenRequest | None = None,
    claims: dict[str, Any] | None = None,
) -> JoinedNode:
    """Join node ``name``; ``grant`` adds to the admin's join token, ``claims`` to what
    the node says of itself (JoinOptions fields such as labels and cpus)."""
    state = c.root / name
    request = control_pb2.JoinTokenRequest(name=name, pool=pool)
    if grant is not None:
        request.MergeFrom(grant)
    token = c.admin().CreateJoinToken(request).token
    ca_file = c.root / "cluster-ca.crt"
    ca_file.write_bytes(c.orch.authority.trust_bundle())
    node_id = f"spiffe://orch.test/node/{name}"
    if runtime == "docker":
        from node.runtime.docker import DockerRuntime

        docker_rt = DockerRuntime(node_id, state)
        docker_rt.adopt_image("local/busybox:1")
        docker_rt.close()
    else:
        seed = ProcessRuntime(node_id, state)
        ensure_busybox_image(seed)
        seed.close()
    ensure_joined(
        state,
        c.orch.join_target,
        token,
        ca_file,
        JoinOptions(
            name=name, listen=f"{ip}:0", ips=(ip,), runtime=runtime, mode=mode, **(claims or {})
        ),
    )
    node = run_joined_node(state, runtime_kind=runtime)
    c.nodes[name] = node
    return node


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    orch = start_orchestrator(tmp_path / "orch")
    c = Cluster(orch, tmp_path)
    try:
        join_node(c, "node-1", "127.0.0.21")
        join_node(c, "node-2", "127.0.0.22")
        wait_for(
            lambda: (
                all(
                    n.state == "ready"
                    for n in c.admin().ListNodes(control_pb2.ListNodesRequest()).nodes
                )
                and len(c.admin().ListNodes(control_pb2.ListNodesRequest()).nodes) == 2
            ),
            what="two ready nodes",
        )
        yield c
    finally:
        for node in c.nodes.values():
            for ct in node.agent.runtime.list():
                node.agent.runtime.remove(ct.name, force=True)
            node.stop(0)
        stop_orchestrator(c.orch)  # a test may have restarted it
