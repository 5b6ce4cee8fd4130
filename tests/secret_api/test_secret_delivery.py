"""A canary secret reaches the one instance that uses it, on the one node that runs
it, and nothing else: real orchestrator, nodes joined through the real join flow,
real Docker and the sandboxed process runtime."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

import docker
import grpc
import pytest

from protos import control_pb2, gateway_pb2, secrets_pb2, secrets_pb2_grpc, topology_pb2
from tests.control_api.conftest import start_orchestrator, stop_orchestrator
from tests.security.conftest import Cluster, join_node
from tests.waiting import wait_for

CANARY = b"canary-5b2e91d0-only-in-the-instance"
PATH = "/run/secrets/db-pass"
SCRIPT = (
    f"sha256sum {PATH}; stat -c 'mode %a' {PATH};"
    " grep -c ' /run/secrets tmpfs ' /proc/mounts; sleep 600"
)


@contextlib.contextmanager
def _two_node_cluster(
    tmp_path: Path, ips: tuple[str, str], *, runtime: str = "process", mode: str = "push"
) -> Iterator[Cluster]:
    """An orchestrator, node-1 (``runtime``, ``mode``) and node-2 (process, push)."""
    orch = start_orchestrator(tmp_path / "orch")
    c = Cluster(orch, tmp_path)
    try:
        join_node(c, "node-1", ips[0], runtime=runtime, mode=mode)
        join_node(c, "node-2", ips[1])
        wait_for(
            lambda: (
                sum(
                    n.state == "ready"
                    for n in c.admin().ListNodes(control_pb2.ListNodesRequest()).nodes
                )
                == 2
            ),
            what="two ready nodes",
        )
        yield c
    finally:
        for node in c.nodes.values():
            for ct in node.agent.runtime.list():
                node.agent.runtime.remove(ct.name, force=True)
            node.stop(0)
        stop_orchestrator(c.orch)


@pytest.fixture(params=["process", "docker"])
def two_nodes(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Cluster]:
    if request.param == "docker":
        request.getfixturevalue("busybox_image")
    with _two_node_cluster(tmp_path, ("127.0.0.51", "127.0.0.52"), runtime=request.param) as c:
        yield c


def _run_vault(c: Cluster, value: bytes, command: str) -> str:
    """Create secret db-pass with ``value``, run one instance of vault/db using it on
    node-1 (node-2 cordoned) with ``command``; returns the instance's container name."""
    stub = secrets_pb2_grpc.SecretServiceStub(
        grpc.secure_channel(c.orch.target, c.orch.user("admin", "admin"))
    )
    stub.CreateSecret(secrets_pb2.SecretWrite(name="db-pass", value=value))
    c.admin().Cordon(control_pb2.NodeRef(name="node-2"))
    app = topology_pb2.Application(
        name="vault",
        services=[
            topology_pb2.Service(
                name="db",
                image="local/busybox:1",
                command=["sh", "-c", command],
                secrets=[topology_pb2.ServiceSecret(name="db-pass", path=PATH)],
            )
        ],
    )
    c.admin().Apply(control_pb2.ApplyRequest(app=app))
    wait_for(
        lambda: any(w.state == "running" and w.node == "node-1" for w in c.workloads()),
        timeout=60,
        what="the instance running on node-1",
    )
    # The engine may be shared with other tests: ours is the one of this application.
    (container,) = [
        s.name
        for s in c.nodes["node-1"].agent.runtime.list()
        if s.name.startswith("default.vault.db.")
    ]
    return container


def _files_holding(root: Path, needle: bytes, skip: Path) -> list[str]:
    found = []
    for dirpath, _dirs, files in os.walk(root):
        if Path(dirpath).is_relative_to(skip):
            continue
        for name in files:
            path = Path(dirpath) / name
            try:
                if not path.is_symlink() and needle in path.read_bytes():
                    found.append(str(path))
            except OSError:
                continue
    return found


def test_canary_secret_is_only_in_its_instance(two_nodes: Cluster) -> None:
    c = two_nodes
    container = _run_vault(c, CANARY, SCRIPT)
    node1 = c.nodes["node-1"]

    def printed() -> str:
        return b"".join(node1.agent.runtime.logs(container)).decode(errors="replace")

    wait_for(lambda: "mode" in printed(), what="the instance report")
    out = printed()
    # Inside the instance: the value at its path, mode 0400, on a memory-backed mount.
    assert hashlib.sha256(CANARY).hexdigest() in out
    assert "mode 400" in out
    assert out.split("mode 400")[1].split()[0] == "1"

    # Nowhere else: not the store, the audit log, any log or state directory of the
    # orchestrator or of either node (only node-1's tmpfs of secret files holds it).
    held = node1.agent.secrets.root
    assert _files_holding(c.root, CANARY, skip=held) == []
    assert CANARY.decode() not in json.dumps([json_of(w) for w in c.workloads()])
    detail = c.admin().GetApp(control_pb2.AppRef(name="vault"))
    assert CANARY not in detail.SerializeToString()
    assert CANARY not in c.admin().ListWorkloads(control_pb2.WorkloadFilter()).SerializeToString()
    if node1.agent.runtime.name == "docker":
        client = docker.from_env()
        try:
            found = [
                ct.attrs
                for ct in client.containers.list(all=True)
                if ct.name.endswith(container) or container in ct.name
            ]
            assert found and CANARY.decode() not in json.dumps(found)
        finally:
            client.close()
    # node-2 never ran it: no secret file there at all, and asking for node-1's
    # assignments (where the sealed secret travels in pull mode) is refused and audited.
    assert list(c.nodes["node-2"].agent.secrets.root.iterdir()) == []
    with pytest.raises(grpc.RpcError) as err:
        next(iter(c.as_node("node-2").Watch(gateway_pb2.WatchRequest(node="node-1"), timeout=5)))
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert any(e["event"] == "watch.refused" and e.get("asked_for") == "node-1" for e in c.audit())

    # The instance leaves: so does the file.
    c.admin().DeleteApp(control_pb2.AppRef(name="vault"))
    wait_for(lambda: c.workloads() == [], timeout=60, what="the instance removed")
    wait_for(lambda: not any(held.iterdir()), timeout=30, what="node-1's secret files removed")


def json_of(message: object) -> str:
    from google.protobuf import json_format

    return json_format.MessageToJson(message)  # type: ignore[arg-type]


def _one_instance_with_a_secret(c: Cluster) -> Path:
    """Run one instance using a secret on node-1; returns node-1's secret files root."""
    _run_vault(c, CANARY, "sleep 600")
    root = c.nodes["node-1"].agent.secrets.root
    assert any(root.iterdir())
    return root


@pytest.fixture
def process_nodes(tmp_path: Path) -> Iterator[Cluster]:
    with _two_node_cluster(tmp_path, ("127.0.0.53", "127.0.0.54")) as c:
        yield c


def test_revoked_node_removes_the_secrets_it_holds(process_nodes: Cluster) -> None:
    c = process_nodes
    root = _one_instance_with_a_secret(c)
    c.admin().RevokeNode(control_pb2.RevokeNodeRequest(name="node-1"))
    wait_for(lambda: not any(root.iterdir()), timeout=30, what="node-1's secret files removed")


def test_an_instance_removed_behind_the_agents_back_loses_its_secret_files(
    process_nodes: Cluster,
) -> None:
    # Fenced, removed by hand, lost in a crash: the next heartbeat's listing prunes.
    c = process_nodes
    root = _one_instance_with_a_secret(c)
    runtime = c.nodes["node-1"].agent.runtime
    (held,) = list(root.iterdir())
    before = held.stat().st_ino
    for ct in runtime.list():
        runtime.remove(ct.name, force=True)

    def old_files_gone() -> bool:
        # Gone, or written anew for the instance the orchestrator recreated in its place.
        try:
            return held.stat().st_ino != before
        except FileNotFoundError:
            return True

    wait_for(old_files_gone, timeout=30, what="node-1's old secret files pruned")


@pytest.fixture(params=["push", "pull"])
def rotating(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Cluster]:
    """node-1 (process runtime) in push or pull mode, node-2 beside it."""
    with _two_node_cluster(tmp_path, ("127.0.0.55", "127.0.0.56"), mode=request.param) as c:
        yield c


def test_rotation_reaches_the_running_instance_on_a_pull_node_too(rotating: Cluster) -> None:
    _rotation_reaches_the_running_instance(rotating)


def test_rotation_reaches_the_running_instance(two_nodes: Cluster) -> None:
    _rotation_reaches_the_running_instance(two_nodes)


def _rotation_reaches_the_running_instance(c: Cluster) -> None:
    # The instance prints its file's digest whenever it changes, without restarting.
    watch = (
        f"last=; while true; do now=$(sha256sum {PATH}); "
        '[ "$now" != "$last" ] && echo "$now" && last=$now; sleep 0.2; done'
    )
    container = _run_vault(c, b"first value", watch)
    runtime = c.nodes["node-1"].agent.runtime
    started = runtime.inspect(container).started_at

    def printed() -> str:
        return b"".join(runtime.logs(container)).decode(errors="replace")

    first, second = (hashlib.sha256(v).hexdigest() for v in (b"first value", b"second value"))
    wait_for(lambda: first in printed(), what="the first version read")
    stub = secrets_pb2_grpc.SecretServiceStub(
        grpc.secure_channel(c.orch.target, c.orch.user("admin", "admin"))
    )
    info = stub.RotateSecret(secrets_pb2.SecretWrite(name="db-pass", value=b"second value"))
    assert info.version == 2
    wait_for(lambda: second in printed(), what="the second version read, same instance")
    assert runtime.inspect(container).started_at == started  # not restarted
    pushed = 0 if c.nodes["node-1"].joined.mode == "pull" else 1  # pull nodes fetch it
    assert any(
        e["event"] == "secret.rotated" and e.get("instances_updated") == pushed for e in c.audit()
    )
