"""Input rules: each rule refuses with InvalidArgument naming the exact field."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import pytest

from node.errors import InvalidArgument
from node.runtime.base import ContainerSpec, VolumeMount
from node.validation import (
    validate_cpu,
    validate_image_ref,
    validate_memory,
    validate_mount_path,
    validate_name,
    validate_spec,
)
from protos.wire.rules import MAX_COMMAND_ARGS, MAX_ENV_BYTES, MIN_MEMORY

GOOD = ContainerSpec(
    name="web-1",
    workload_id="acme/shop/web",
    image="local/busybox:1",
    command=("httpd", "-f", "-p", "8080"),
    env=(("PORT", "8080"), ("_X1", "")),
    cpu=0.25,
    memory=64 * 1024 * 1024,
    volumes=(VolumeMount("data", "/data"), VolumeMount("data", "/srv/copy", read_only=True)),
    network="none",
    labels=(("team", "blue"), ("app.kubernetes/ish", "x")),
)


def refused(spec: ContainerSpec, **kw: Any) -> InvalidArgument:
    with pytest.raises(InvalidArgument) as err:
        validate_spec(spec, **kw)
    return err.value


def test_good_spec_passes() -> None:
    validate_spec(GOOD, max_cpus=2, max_memory=1 << 30)
    validate_spec(dataclasses.replace(GOOD, network="host", cpu=0, memory=0, command=()))


CASES: list[tuple[str, dict[str, Any], str]] = [
    ("empty name", {"name": ""}, "name"),
    ("upper-case name", {"name": "Web"}, "name"),
    ("name with slash", {"name": "a/b"}, "name"),
    ("name starting with dot", {"name": ".web"}, "name"),
    ("name too long", {"name": "a" * 64}, "name"),
    ("name not a string", {"name": 7}, "name"),
    ("workload id empty", {"workload_id": ""}, "workload_id"),
    ("workload id with space", {"workload_id": "a b"}, "workload_id"),
    ("image empty", {"image": ""}, "image"),
    ("image upper-case repo", {"image": "Local/Busybox"}, "image"),
    ("image bad tag", {"image": "busybox:-tag"}, "image"),
    ("image short digest", {"image": "busybox@sha256:abc"}, "image"),
    ("image with space", {"image": "busy box"}, "image"),
    ("image too long", {"image": "a" * 600}, "image"),
    ("image repository name too long", {"image": "a/" * 127 + "ab"}, "image"),
    ("command too many args", {"command": ("x",) * (MAX_COMMAND_ARGS + 1)}, "command"),
    ("command too large", {"command": ("x" * 70_000,)}, "command"),
    ("command NUL", {"command": ("sh", "a\x00b")}, "command[1]"),
    ("command not strings", {"command": ("sh", 3)}, "command[1]"),
    ("env bad name", {"env": (("OK", "1"), ("2BAD", "x"))}, "env[1].name"),
    ("env name with dash", {"env": (("A-B", "x"),)}, "env[0].name"),
    ("env name with equals", {"env": (("A=B", "x"),)}, "env[0].name"),
    ("env NUL value", {"env": (("A", "x\x00y"),)}, "env[0].value"),
    ("env duplicate", {"env": (("A", "1"), ("B", "2"), ("A", "3"))}, "env[2].name"),
    ("env not a pair", {"env": (("A", "1", "2"),)}, "env[0]"),
    ("env too large", {"env": (("A", "x" * MAX_ENV_BYTES),)}, "env"),
    ("cpu negative", {"cpu": -0.5}, "cpu"),
    ("cpu NaN", {"cpu": math.nan}, "cpu"),
    ("cpu infinite", {"cpu": math.inf}, "cpu"),
    ("cpu not a number", {"cpu": "1"}, "cpu"),
    ("cpu bool", {"cpu": True}, "cpu"),
    ("cpu too fine", {"cpu": 0.0001}, "cpu"),
    ("memory negative", {"memory": -1}, "memory"),
    ("memory too small", {"memory": MIN_MEMORY - 1}, "memory"),
    ("memory float", {"memory": 64.0 * 1024 * 1024}, "memory"),
    ("memory absurd", {"memory": 1 << 60}, "memory"),
    ("volume bad name", {"volumes": (VolumeMount("../etc", "/data"),)}, "volumes[0].name"),
    ("volume relative path", {"volumes": (VolumeMount("d", "data"),)}, "volumes[0].path"),
    ("volume dot-dot path", {"volumes": (VolumeMount("d", "/a/../etc"),)}, "volumes[0].path"),
    ("volume root path", {"volumes": (VolumeMount("d", "/"),)}, "volumes[0].path"),
    ("volume /proc", {"volumes": (VolumeMount("d", "/proc"),)}, "volumes[0].path"),
    ("volume under /sys", {"volumes": (VolumeMount("d", "/sys/fs/cgroup"),)}, "volumes[0].path"),
    ("volume under /dev", {"volumes": (VolumeMount("d", "/dev/shm"),)}, "volumes[0].path"),
    ("volume trailing slash", {"volumes": (VolumeMount("d", "/data/"),)}, "volumes[0].path"),
    ("volume double slash", {"volumes": (VolumeMount("d", "/a//b"),)}, "volumes[0].path"),
    ("volume dot segment", {"volumes": (VolumeMount("d", "/a/./b"),)}, "volumes[0].path"),
    ("volume colon", {"volumes": (VolumeMount("d", "/a:rw"),)}, "volumes[0].path"),
    ("volume NUL", {"volumes": (VolumeMount("d", "/a\x00b"),)}, "volumes[0].path"),
    ("volume same path twice",
     {"volumes": (VolumeMount("a", "/data"), VolumeMount("b", "/data"))}, "volumes[1].path"),
    ("volume read_only not bool",
     {"volumes": (VolumeMount("a", "/data", read_only="yes"),)}, "volumes[0].read_only"),  # type: ignore[arg-type]
    ("volume not a mount", {"volumes": (("a", "/data"),)}, "volumes[0]"),
    ("network bridge", {"network": "bridge"}, "network"),
    ("network container", {"network": "container:abc"}, "network"),
    ("network empty", {"network": ""}, "network"),
    ("label reserved prefix", {"labels": (("capstan.node", "other"),)}, "labels[0].key"),
    ("label bad key", {"labels": (("ok", "1"), ("Bad Key", "x"))}, "labels[1].key"),
    ("label NUL value", {"labels": (("k", "\x00"),)}, "labels[0].value"),
    ("label duplicate", {"labels": (("k", "1"), ("k", "2"))}, "labels[1].key"),
]


@pytest.mark.parametrize(("change", "field"), [(c[1], c[2]) for c in CASES],
                         ids=[c[0] for c in CASES])
def test_each_rule_names_its_field(change: dict[str, Any], field: str) -> None:
    err = refused(dataclasses.replace(GOOD, **change))
    assert err.field == field
    assert str(err).startswith(f"{field}: ")


def test_capacity_limits() -> None:
    assert refused(dataclasses.replace(GOOD, cpu=3.0), max_cpus=2).field == "cpu"
    validate_spec(dataclasses.replace(GOOD, cpu=2.0), max_cpus=2)
    err = refused(dataclasses.replace(GOOD, memory=2 << 30), max_memory=1 << 30)
    assert err.field == "memory"
    validate_spec(dataclasses.replace(GOOD, memory=1 << 30), max_memory=1 << 30)


def test_not_a_spec() -> None:
    with pytest.raises(InvalidArgument) as err:
        validate_spec({"name": "web"})  # type: ignore[arg-type]
    assert err.value.field == "spec"


@pytest.mark.parametrize("ref", [
    "busybox", "local/busybox:1", "library/busybox:1.36.1-musl",
    "localhost/x", "localhost:5000/team/app:v2", "registry.example.com/a/b_c/d-e:latest",
    "reg.example.com:443/x@sha256:" + "0" * 64, "x:tag@sha256:" + "f" * 64, "a__b.c--d",
])
def test_image_refs_accepted(ref: str) -> None:
    assert validate_image_ref("image", ref) == ref


@pytest.mark.parametrize("ref", [
    "", "Busybox", "UPPER/case", "a.b/C", "/busybox", "busybox/", "busybox:", "busybox::1",
    "busy box", "a//b", "-a", "a_", "x@sha256:" + "0" * 63, "x@md5:" + "0" * 32,
    "x:" + "t" * 129, "sha256:" + "a" * 64, "f" * 64, "a\nb",
])
def test_image_refs_refused(ref: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        validate_image_ref("image", ref)
    assert err.value.field == "image"


def test_image_id_only_where_allowed() -> None:
    image_id = "sha256:" + "a" * 64
    assert validate_image_ref("ref", image_id, allow_id=True) == image_id
    with pytest.raises(InvalidArgument):
        validate_image_ref("ref", "sha256:" + "A" * 64, allow_id=True)


@pytest.mark.parametrize("name", ["a", "0", "web-1", "db_2.primary", "a" * 63])
def test_names_accepted(name: str) -> None:
    assert validate_name("name", name) == name


@pytest.mark.parametrize("path", ["/data", "/var/lib/app", "/srv/a.b_c-d", "/procfs", "/device"])
def test_mount_paths_accepted(path: str) -> None:
    assert validate_mount_path("p", path) == path


def test_numbers_returned_normalized() -> None:
    assert validate_cpu("cpu", 1) == 1.0
    assert validate_memory("memory", 0) == 0
    assert validate_memory("memory", MIN_MEMORY) == MIN_MEMORY
