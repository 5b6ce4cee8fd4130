"""The topology loader and the node apply the same input rules (protos.wire.rules):
anything a topology accepts must be accepted by every node."""

from __future__ import annotations

from pathlib import Path

import pytest

from node import validation as node_rules
from node.errors import InvalidArgument
from node.runtime.base import ContainerSpec, VolumeMount
from orchestrator.topology import load_topology_file
from protos import topology_pb2 as pb
from protos.wire import rules

ROOT = Path(__file__).resolve().parents[2]


def node_accepts(check: object, *args: object) -> bool:
    try:
        check(*args)  # type: ignore[operator]
    except InvalidArgument:
        return False
    return True


@pytest.mark.parametrize("name", ["data", "a-b", "a_b", "a.b", "A", "-a", "a" * 63, "a" * 64])
def test_volume_names_the_loader_accepts_the_node_accepts(name: str) -> None:
    if rules.check_dns_label(name) is None:
        assert node_accepts(node_rules.validate_name, "name", name)


def test_loaded_example_becomes_specs_every_node_accepts() -> None:
    app = load_topology_file(ROOT / "examples" / "shop.yaml")
    for svc in app.services:
        spec = ContainerSpec(
            name=f"{app.name}-{svc.name}-0",
            workload_id=f"{app.tenant}/{app.name}/{svc.name}/0",
            image=svc.image,
            command=tuple(svc.command),
            env=tuple(sorted(svc.env.items())),
            cpu=svc.resources.cpu,
            memory=svc.resources.memory,
            volumes=tuple(VolumeMount(v.name, v.path, v.read_only) for v in svc.volumes),
            network="host" if svc.network == pb.NETWORK_MODE_HOST else "none",
        )
        node_rules.validate_spec(spec)
