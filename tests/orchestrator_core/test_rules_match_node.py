"""The topology loader restates the node's input rules (orchestrator and node do not
import each other). These tests fail when the two drift apart: anything a topology
accepts must be accepted by every node."""

from __future__ import annotations

from pathlib import Path

import pytest

from node import validation as node_rules
from node.errors import InvalidArgument
from node.runtime.base import ContainerSpec, VolumeMount
from orchestrator import _rules
from orchestrator.topology import load_topology_file
from protos import topology_pb2 as pb

ROOT = Path(__file__).resolve().parents[2]


def node_accepts(check: object, *args: object) -> bool:
    try:
        check(*args)  # type: ignore[operator]
    except InvalidArgument:
        return False
    return True


def test_patterns_and_limits_are_the_nodes() -> None:
    assert _rules.IMAGE_REF_RE.pattern == node_rules.IMAGE_REF_RE.pattern
    assert _rules.ENV_NAME_RE.pattern == node_rules.ENV_NAME_RE.pattern
    assert _rules.LABEL_KEY_RE.pattern == node_rules.LABEL_KEY_RE.pattern
    for name in (
        "MAX_IMAGE_REF",
        "MAX_IMAGE_NAME",
        "MAX_COMMAND_ARGS",
        "MAX_COMMAND_BYTES",
        "MAX_ENV_VARS",
        "MAX_ENV_BYTES",
        "MAX_LABEL_VALUE",
        "MAX_VOLUMES",
        "MAX_MOUNT_PATH",
        "MIN_MEMORY",
        "MAX_MEMORY",
        "FORBIDDEN_MOUNT_ROOTS",
    ):
        assert getattr(_rules, name) == getattr(node_rules, name), name


IMAGES = [
    "local/busybox:1",
    "busybox",
    "Busybox",
    "localhost:5000/x/y:tag",
    "registry.example.com/team/app@sha256:" + "a" * 64,
    "REGISTRY.example.com/app",
    "registry:5000/app",
    "a/b/c/d:1.0-rc_1",
    "app:",
    ":tag",
    "a//b",
    "a b",
    "app@sha256:short",
    "x" * 300,
    "-app",
]


@pytest.mark.parametrize("image", IMAGES)
def test_image_rule_agrees(image: str) -> None:
    ours = _rules.check_image_ref(image) is None
    assert ours == node_accepts(node_rules.validate_image_ref, "image", image)


PATHS = [
    "/data",
    "/",
    "/proc",
    "/proc/1",
    "/sysx",
    "/a/../b",
    "/a/./b",
    "/a/",
    "//a",
    "a",
    "/a:b",
    "/a,b",
    "/dev/shm",
]


@pytest.mark.parametrize("path", PATHS)
def test_mount_path_rule_agrees(path: str) -> None:
    ours = _rules.check_mount_path(path) is None
    assert ours == node_accepts(node_rules.validate_mount_path, "path", path)


@pytest.mark.parametrize("name", ["data", "a-b", "a_b", "a.b", "A", "-a", "a" * 63, "a" * 64])
def test_volume_names_the_loader_accepts_the_node_accepts(name: str) -> None:
    if _rules.check_dns_label(name) is None:
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
