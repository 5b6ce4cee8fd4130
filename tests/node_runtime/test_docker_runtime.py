"""DockerRuntime against the real Docker Engine, with the busybox image."""

from __future__ import annotations

import contextlib
import io
import json
import tarfile
import uuid
from pathlib import Path

import docker
import docker.errors
import pytest

from node.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PolicyDenied,
    RuntimeUnavailable,
)
from node.policy import POLICY_FILE, NodePolicy
from node.runtime import docker_available, select_runtime
from node.runtime.base import ContainerState, Runtime, VolumeMount
from node.runtime.docker import DockerRuntime, node_hash
from node.seccomp import profile

from .conftest import MakeRuntime, docker_attrs, spec, wait_exit

pytestmark = pytest.mark.docker

MiB = 1024 * 1024
# Exits at once on SIGTERM (wait is interruptible, sleep is not), so stops are quick.
SERVE = ("sh", "-c", "echo ready; trap 'exit 0' TERM; while :; do sleep 1 & wait $!; done")


def test_implements_the_runtime_protocol(runtime: DockerRuntime) -> None:
    assert isinstance(runtime, Runtime)
    assert runtime.name == "docker"


def test_lifecycle(runtime: DockerRuntime, docker_client: docker.DockerClient) -> None:
    created = runtime.create(spec(command=SERVE))
    assert created.state is ContainerState.CREATED
    assert (created.name, created.workload_id, created.image) == (
        "web", "test/web", "local/busybox:1")
    assert created.exit_code is None and created.started_at is None
    # Without an engine call, the create's and the list's status are the inspect's.
    assert runtime.list() == [created] == [runtime.inspect("web")]

    running = runtime.start("web")
    assert running.state is ContainerState.RUNNING
    assert running.pid is not None and running.started_at is not None
    assert running.runtime_id == created.runtime_id
    assert [s.name for s in runtime.list()] == ["web"]
    assert runtime.inspect("web").state is ContainerState.RUNNING

    stopped = runtime.stop("web", timeout=10)
    assert stopped.state is ContainerState.EXITED
    assert stopped.exit_code == 0  # the trap ran: a graceful stop, not a kill
    assert stopped.finished_at is not None

    restarted = runtime.restart("web", timeout=10)
    assert restarted.state is ContainerState.RUNNING
    assert b"".join(runtime.logs("web")).count(b"ready\n") == 2

    runtime.remove("web", force=True)
    assert runtime.list() == []
    with pytest.raises(NotFound):
        runtime.inspect("web")
    with pytest.raises(docker.errors.NotFound):
        docker_client.api.inspect_container(runtime.docker_name("web"))


def test_host_config_limits_labels_and_hardening(
    runtime: DockerRuntime, docker_client: docker.DockerClient
) -> None:
    runtime.create(spec(cpu=0.5, memory=64 * MiB, env=(("GREETING", "hi"),),
                        labels=(("team", "blue"),)))
    attrs = docker_attrs(docker_client, runtime, "web")
    host = attrs["HostConfig"]
    assert host["NanoCpus"] == 500_000_000
    assert host["Memory"] == 64 * MiB
    assert host["MemorySwap"] == 64 * MiB
    assert host["NetworkMode"] == "none"
    assert host["Privileged"] is False
    # The sandbox's defaults (docs/sandbox.md), as docker inspect shows them.
    assert host["CapDrop"] == ["ALL"] and not host["CapAdd"]
    assert "no-new-privileges:true" in host["SecurityOpt"]
    seccomp = [o for o in host["SecurityOpt"] if o.startswith("seccomp=")]
    assert len(seccomp) == 1 and json.loads(seccomp[0].removeprefix("seccomp=")) == profile("")
    assert host["PidsLimit"] == 1024
    assert host["ReadonlyRootfs"] is True
    assert host["Tmpfs"] == {"/tmp": "rw,nosuid,nodev,size=67108864,mode=1777"}
    assert host["IpcMode"] == "private"
    assert host["PidMode"] == ""  # the engine's own PID namespace, never the host's
    assert not host["Devices"]
    uid, _, gid = attrs["Config"]["User"].partition(":")
    assert int(uid) >= 1 << 24 and gid == uid  # the tenant's uid, not root
    labels = attrs["Config"]["Labels"]
    assert labels["capstan.node"] == runtime.node_id
    assert labels["capstan.workload"] == "test/web"
    assert labels["capstan.name"] == "web"
    assert labels["team"] == "blue"
    assert "GREETING=hi" in attrs["Config"]["Env"]
    assert attrs["Name"] == f"/capstan-{node_hash(runtime.node_id)}-web"


def test_network_none_has_only_loopback(
    runtime: DockerRuntime, docker_client: docker.DockerClient
) -> None:
    runtime.create(spec(command=("cat", "/proc/net/dev")))
    runtime.start("web")
    assert wait_exit(docker_client, runtime, "web") == 0
    interfaces = [line.split(b":")[0].strip()
                  for line in b"".join(runtime.logs("web")).splitlines() if b":" in line]
    assert interfaces == [b"lo"]


def test_host_network_needs_the_nodes_policy(
    runtime: DockerRuntime, docker_client: docker.DockerClient
) -> None:
    with pytest.raises(PolicyDenied) as refused:
        runtime.create(spec(network="host"))
    assert refused.value.field == "network"
    with pytest.raises(PolicyDenied) as root:
        runtime.create(spec(user="0"))
    assert root.value.field == "user"
    with pytest.raises(PolicyDenied) as caps:
        runtime.create(spec(cap_add=("NET_ADMIN",)))
    assert caps.value.field == "cap_add[0]"
    assert runtime.list() == []  # nothing created


def test_host_network_has_no_capabilities(
    make_runtime: MakeRuntime, docker_client: docker.DockerClient, tmp_path: Path
) -> None:
    # The node was given host networking at join (its policy.json).
    (tmp_path / "host").mkdir()
    (tmp_path / "host" / POLICY_FILE).write_bytes(NodePolicy(host_network=True).to_json())
    runtime = make_runtime("host")
    runtime.create(spec(network="host"))
    host = docker_attrs(docker_client, runtime, "web")["HostConfig"]
    assert host["NetworkMode"] == "host"
    assert host["CapDrop"] == ["ALL"]  # NET_BIND_SERVICE included: no host low port
    assert not host.get("Sysctls")


def test_bridge_network_refused_and_nothing_created(
    runtime: DockerRuntime, docker_client: docker.DockerClient
) -> None:
    with pytest.raises(InvalidArgument) as err:
        runtime.create(spec(network="bridge"))
    assert err.value.field == "network"
    assert runtime.list() == []
    with pytest.raises(docker.errors.NotFound):
        docker_client.api.inspect_container(runtime.docker_name("web"))


def test_logs_carry_stdout_and_stderr(
    runtime: DockerRuntime, docker_client: docker.DockerClient
) -> None:
    runtime.create(spec(command=("sh", "-c", "echo out; echo err >&2")))
    runtime.start("web")
    assert wait_exit(docker_client, runtime, "web") == 0
    # Docker orders lines within a stream, not across stdout and stderr.
    assert sorted(b"".join(runtime.logs("web")).splitlines()) == [b"err", b"out"]


def test_logs_tail(runtime: DockerRuntime, docker_client: docker.DockerClient) -> None:
    runtime.create(spec(command=("sh", "-c", "for i in 1 2 3 4 5; do echo line$i; done")))
    runtime.start("web")
    assert wait_exit(docker_client, runtime, "web") == 0
    assert b"".join(runtime.logs("web")).splitlines() == [
        b"line1", b"line2", b"line3", b"line4", b"line5"]
    assert b"".join(runtime.logs("web", tail=2)) == b"line4\nline5\n"
    with pytest.raises(InvalidArgument) as err:
        runtime.logs("web", tail=-1)
    assert err.value.field == "tail"


def test_logs_follow_streams_until_exit(runtime: DockerRuntime) -> None:
    # The container waits for a file the test creates after reading the first line,
    # so the second line can only arrive through a followed stream.
    runtime.create(spec(
        command=("sh", "-c", "echo first; while [ ! -e /data/go ]; do sleep 0.05; done; "
                 "echo second"),
        volumes=(VolumeMount("ctl", "/data"),),
    ))
    runtime.start("web")
    stream = runtime.logs("web", follow=True)
    received = b""
    for chunk in stream:
        received += chunk
        if b"first\n" in received:
            break
    (runtime.volumes.path("ctl") / "go").touch()
    for chunk in stream:  # ends by itself when the container exits
        received += chunk
    assert received == b"first\nsecond\n"


def test_logs_follow_can_be_abandoned(runtime: DockerRuntime) -> None:
    runtime.create(spec(command=SERVE))
    runtime.start("web")
    stream = runtime.logs("web", follow=True)
    assert next(iter(stream)) == b"ready\n"
    stream.close()  # what the gRPC layer does when the caller goes away
    assert runtime.inspect("web").state is ContainerState.RUNNING


def test_stats_reports_cpu_and_memory(runtime: DockerRuntime) -> None:
    runtime.create(spec(command=("sh", "-c", "while :; do :; done"), cpu=0.5, memory=32 * MiB))
    runtime.start("web")
    stats = runtime.stats("web")
    assert stats.name == "web"
    assert stats.cpu_seconds > 0
    assert 0 < stats.cpu_fraction <= 0.75  # a busy loop held to half a core
    assert 0 < stats.memory_bytes < 32 * MiB
    assert stats.memory_limit == 32 * MiB


def test_stats_of_a_container_not_running(runtime: DockerRuntime) -> None:
    runtime.create(spec(memory=16 * MiB))
    stats = runtime.stats("web")
    assert (stats.cpu_seconds, stats.cpu_fraction, stats.memory_bytes) == (0.0, 0.0, 0)
    assert stats.memory_limit == 16 * MiB


def test_volume_bind_mount_written_by_container(
    runtime: DockerRuntime, docker_client: docker.DockerClient
) -> None:
    runtime.create(spec(command=("sh", "-c", "echo from-container > /data/out.txt"),
                        volumes=(VolumeMount("data", "/data"),)))
    runtime.start("web")
    assert wait_exit(docker_client, runtime, "web") == 0
    volume = runtime.volumes.path("data")
    assert volume == (runtime.state_dir / "volumes" / "data").resolve()
    assert (volume / "out.txt").read_bytes() == b"from-container\n"
    mounts = docker_attrs(docker_client, runtime, "web")["Mounts"]
    assert [(m["Type"], m["Source"], m["Destination"], m["RW"]) for m in mounts] == [
        ("bind", str(volume), "/data", True)]


def test_read_only_volume_cannot_be_written(
    runtime: DockerRuntime, docker_client: docker.DockerClient
) -> None:
    runtime.volumes.create("data")
    runtime.create(spec(command=("sh", "-c", "echo x > /data/out.txt"),
                        volumes=(VolumeMount("data", "/data", read_only=True),)))
    runtime.start("web")
    assert wait_exit(docker_client, runtime, "web") != 0
    assert list(runtime.volumes.path("data").iterdir()) == []


def test_two_node_ids_are_isolated(
    make_runtime: MakeRuntime, docker_client: docker.DockerClient
) -> None:
    a, b = make_runtime("a"), make_runtime("b")
    a.create(spec("web", command=SERVE))
    b.create(spec("web"))
    a.create(spec("only-a", command=SERVE))
    a.start("only-a")
    assert [s.name for s in a.list()] == ["only-a", "web"]
    assert [s.name for s in b.list()] == ["web"]
    assert a.inspect("web").runtime_id != b.inspect("web").runtime_id

    for attempt in (b.inspect, b.start, b.stop, b.restart, b.stats):
        with pytest.raises(NotFound):
            attempt("only-a")
    with pytest.raises(NotFound):
        b.remove("only-a", force=True)
    with pytest.raises(NotFound):
        b.logs("only-a")
    # Not even by a's Docker name, which is a valid container name for b.
    with pytest.raises(NotFound):
        b.inspect(a.docker_name("only-a"))
    assert a.inspect("only-a").state is ContainerState.RUNNING
    assert [s.name for s in a.list()] == ["only-a", "web"]


def test_container_with_our_name_but_foreign_labels_is_invisible(
    runtime: DockerRuntime, docker_client: docker.DockerClient
) -> None:
    foreign = docker_client.api.create_container(
        "local/busybox:1", command=["true"], name=runtime.docker_name("web"),
        labels={"capstan.node": "someone-else", "capstan.name": "web"},
        host_config=docker_client.api.create_host_config(network_mode="none"),
    )
    try:
        with pytest.raises(NotFound):
            runtime.inspect("web")
        with pytest.raises(NotFound):
            runtime.remove("web", force=True)
        assert runtime.list() == []
        docker_client.api.inspect_container(foreign["Id"])  # untouched
    finally:
        docker_client.api.remove_container(foreign["Id"], force=True)


def test_error_mapping(runtime: DockerRuntime, docker_client: docker.DockerClient) -> None:
    with pytest.raises(NotFound):
        runtime.inspect("nothing-here")
    with pytest.raises(NotFound):
        runtime.stats("nothing-here")

    first = runtime.create(spec(command=SERVE))
    with pytest.raises(AlreadyExists):
        runtime.create(spec(command=("true",)))
    assert runtime.inspect("web").runtime_id == first.runtime_id
    assert docker_attrs(docker_client, runtime, "web")["Config"]["Cmd"] == list(SERVE)

    runtime.start("web")
    with pytest.raises(FailedPrecondition):
        runtime.remove("web")  # running, not forced
    assert runtime.inspect("web").state is ContainerState.RUNNING

    with pytest.raises(InvalidArgument) as err:
        runtime.stop("web", timeout=-1)
    assert err.value.field == "timeout"
    with pytest.raises(InvalidArgument) as err:
        runtime.inspect("Not/A/Name")
    assert err.value.field == "name"


def test_missing_image_is_not_found_and_creates_nothing(runtime: DockerRuntime) -> None:
    with pytest.raises(NotFound, match="image"):
        runtime.create(spec(image="local/never-imported:1"))
    assert runtime.list() == []


def test_spec_beyond_node_capacity_refused(runtime: DockerRuntime) -> None:
    cpus = runtime.info().cpus
    with pytest.raises(InvalidArgument) as err:
        runtime.create(spec(cpu=cpus + 1))
    assert err.value.field == "cpu"
    assert runtime.list() == []


def test_unreachable_engine_is_runtime_unavailable(tmp_path: Path) -> None:
    client = docker.DockerClient(base_url=f"unix://{tmp_path}/no-docker.sock", version="1.41")
    runtime = DockerRuntime("capstan-test-node-unreachable", tmp_path, client=client)
    with pytest.raises(RuntimeUnavailable):
        runtime.list()
    with pytest.raises(RuntimeUnavailable):
        runtime.info()
    client.close()


def test_image_export_then_import(runtime: DockerRuntime, docker_client: docker.DockerClient
                                  ) -> None:
    ref = f"local/capstan-test-{uuid.uuid4().hex[:8]}:1"
    repository, tag = ref.rsplit(":", 1)
    docker_client.api.tag("local/busybox:1", repository, tag)
    try:
        runtime.adopt_image(ref)  # a node has only what it is given
        archive = b"".join(runtime.image_export(ref))
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            assert "manifest.json" in tar.getnames()
        docker_client.api.remove_image(runtime.node_image(ref))
        assert not runtime.image_exists(ref)

        # Fed in small pieces from a generator: the import streams, it is not handed bytes.
        pieces = (archive[i:i + 65536] for i in range(0, len(archive), 65536))
        assert runtime.image_import(pieces) == [ref]
        assert runtime.image_exists(ref)
    finally:
        with contextlib.suppress(docker.errors.NotFound):
            docker_client.api.remove_image(runtime.node_image(ref))
        with contextlib.suppress(docker.errors.NotFound):
            docker_client.api.remove_image(ref)


def test_image_errors(runtime: DockerRuntime) -> None:
    with pytest.raises(NotFound):
        runtime.image_export("local/never-imported:1")
    with pytest.raises(InvalidArgument) as err:
        runtime.image_export("UPPER/case")
    assert err.value.field == "ref"
    with pytest.raises(InvalidArgument) as err:
        runtime.image_import(iter([b"this is not an image archive" * 100]))
    assert err.value.field == "data"
    assert runtime.image_exists("local/busybox:1")


def test_info(runtime: DockerRuntime) -> None:
    info = runtime.info()
    assert info.runtime == "docker"
    assert info.version
    assert info.cpus >= 1
    assert info.memory > 0


def test_select_runtime_prefers_docker(tmp_path: Path, docker_client: docker.DockerClient
                                       ) -> None:
    assert docker_available()
    chosen = select_runtime(None, "capstan-test-node-select", tmp_path)
    assert isinstance(chosen, DockerRuntime)
    chosen.close()
    explicit = select_runtime("docker", "capstan-test-node-select", tmp_path)
    assert isinstance(explicit, DockerRuntime)
    explicit.close()
