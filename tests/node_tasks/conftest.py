"""A real orchestrator in-process and real joined nodes (process runtime) on 127.0.0.x.

Every node joins with a one-time token through the orchestrator's Join endpoint,
serves NodeService over mTLS from its own state directory and reports over the
NodeGateway; nothing is faked. Each node's workloads are killed in a finalizer.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest

from node.agent import JoinedNode, run_joined_node
from node.join import JoinOptions, ensure_joined
from node.runtime.process import ProcessRuntime, ensure_busybox_image
from protos import control_pb2, gateway_pb2, gateway_pb2_grpc, topology_pb2
from protos.wire.channel import client_credentials
from tests.control_api.conftest import Running, start_orchestrator, stop_orchestrator
from tests.node_process.conftest import kill_recorded
from tests.waiting import wait_for

IMAGE = "local/busybox:1"


@dataclass
class Member:
    name: str
    state_dir: Path
    runtime: ProcessRuntime
    node: JoinedNode

    @property
    def node_id(self) -> str:
        return self.node.node_id

    @property
    def address(self) -> str:
        return self.node.joined.address

    def credentials(self) -> grpc.ChannelCredentials:
        files = self.node.joined.files
        return client_credentials(
            files.cert.read_bytes(), files.key.read_bytes(), files.ca.read_bytes()
        )

    def names(self) -> list[str]:
        return sorted(c.name for c in self.runtime.list())

    def running(self) -> list[str]:
        return sorted(c.name for c in self.runtime.list() if c.state == "running")


@dataclass
class Cluster:
    orch: Running
    root: Path
    members: list[Member] = field(default_factory=list)

    @property
    def ca_file(self) -> Path:
        path = self.root / "cluster-ca.crt"
        if not path.exists():
            path.write_bytes(self.orch.authority.trust_bundle())
        return path

    def join(
        self,
        name: str,
        ip: str,
        *,
        mode: str = "push",
        image: bool = False,
        labels: dict[str, str] | None = None,
        on_tasks: Callable[[list[gateway_pb2.Task]], None] | None = None,
        prepare: Callable[[ProcessRuntime], None] | None = None,
    ) -> Member:
        # Labels are the admin's word, given with the join token (not by the node).
        token = (
            self.orch.control()
            .CreateJoinToken(control_pb2.JoinTokenRequest(name=name, labels=labels or {}))
            .token
        )
        state_dir = self.root / name
        options = JoinOptions(
            name=name,
            listen=f"{ip}:0",
            runtime="process",
            mode=mode,
            cpus=4,
            memory=4 << 30,
        )
        joined, _ = ensure_joined(state_dir, self.orch.join_target, token, self.ca_file, options)
        runtime = ProcessRuntime(joined.node_id, state_dir)
        if image:
            ensure_busybox_image(runtime, IMAGE)
            # The admin put it there and says so: only such nodes (and nodes seen to
            # receive a verified copy) are ever fetched from.
            self.orch.control().SeedImage(
                control_pb2.SeedImageRequest(node=name, image=self.pinned(runtime))
            )
        if prepare is not None:  # before the agent locks the image store
            prepare(runtime)
        node = run_joined_node(state_dir, runtime=runtime, on_tasks=on_tasks)
        member = Member(name, state_dir, runtime, node)
        self.members.append(member)
        return member

    @staticmethod
    def pinned(runtime: ProcessRuntime) -> str:
        """IMAGE pinned to the digest ``runtime`` holds it with."""
        return f"{IMAGE}@{runtime.image_ids()[IMAGE]}"

    def wait_ready(self, *names: str) -> None:
        def ready() -> bool:
            nodes = self.orch.control().ListNodes(control_pb2.ListNodesRequest()).nodes
            states = {n.name: n.state for n in nodes}
            return all(states.get(n) == "ready" for n in names)

        wait_for(ready, what=f"nodes {names} ready")

    def wait_image_known(self, name: str) -> None:
        """Delegation starts from the images nodes report: wait until the orchestrator
        has recorded ``name``'s."""
        tracker = self.orch.orch.reconciler.tracker
        wait_for(
            lambda: tracker.has_image(name, IMAGE),
            timeout=5.0,
            what=f"the orchestrator to record the image {name} reports (NodeStatus.images)",
        )

    def audit(self) -> list[dict[str, Any]]:
        return self.orch.run(self.orch.orch.audit.entries())  # type: ignore[return-value]

    def workloads(self, app: str = "shop") -> list[control_pb2.Workload]:
        stub = self.orch.control()
        return list(stub.ListWorkloads(control_pb2.WorkloadFilter(app=app)).workloads)

    def gateway(self, member: Member) -> gateway_pb2_grpc.NodeGatewayStub:
        """A NodeGateway stub authenticated with ``member``'s own node certificate."""
        channel = grpc.secure_channel(self.orch.target, member.credentials())
        return gateway_pb2_grpc.NodeGatewayStub(channel)

    def close(self) -> None:
        for m in self.members:
            m.node.stop(0)
            kill_recorded(m.state_dir)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    running = start_orchestrator(tmp_path)
    c = Cluster(running, tmp_path)
    try:
        yield c
    finally:
        c.close()
        stop_orchestrator(running)


def application(
    replicas: int,
    *,
    name: str = "shop",
    constraints: dict[str, str] | None = None,
    restart: int = topology_pb2.RESTART_POLICY_ALWAYS,
) -> topology_pb2.Application:
    return topology_pb2.Application(
        name=name,
        services=[
            topology_pb2.Service(
                name="web",
                image=IMAGE,
                command=["sleep", "300"],
                replicas=replicas,
                resources=topology_pb2.Resources(cpu=0.1, memory=32 * 1024 * 1024),
                placement=topology_pb2.Placement(
                    strategy=topology_pb2.PLACEMENT_STRATEGY_SPREAD,
                    constraints=constraints or {},
                ),
                restart=restart,  # type: ignore[arg-type]
            )
        ],
    )
