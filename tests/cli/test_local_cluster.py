"""``capstan up`` / ``down`` / ``status`` and the operator commands against a real
local cluster: an orchestrator and node agents as processes on 127.0.0.x."""

from __future__ import annotations

import json
import random
import shutil
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import docker
import pytest

from node.runtime import proc
from node.runtime._docker_names import namespace
from node.runtime.images import busybox_binary
from node.runtime.process import STATE_DB
from node.state import NodeState
from orchestrator.context import Context, ContextConfig
from orchestrator.local import LocalCluster
from pki.authority import Authority
from tests.waiting import wait_for

from .conftest import Result, kill_mentioning, processes_mentioning

Run = Callable[..., Result]

APP = """\
apiVersion: capstan/v1
kind: Application
name: shop
services:
  web:
    image: local/busybox:1
    command: ["sh", "-c", "echo web says hello; while true; do sleep 1; done"]
    replicas: 2
    resources: {cpu: 0.1, memory: 32Mi}
    placement: {spread: node}
"""


def _free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_base_port(nodes: int) -> int:
    """A base port whose orchestrator, join and node ports are all free now."""
    for _ in range(200):
        # Below the kernel's ephemeral range (32768-60999 by default): an outgoing
        # connection elsewhere on the machine cannot take the port meanwhile.
        base = random.randrange(10000, 32000, 20)
        hosts = [("127.0.0.1", base), ("127.0.0.1", base + 1)]
        hosts += [(f"127.0.0.{i + 1}", base + 2) for i in range(1, nodes + 1)]
        hosts += [(f"127.0.0.{i + 1}", base + 13) for i in range(nodes + 1)]  # metrics
        if all(_free(h, p) for h, p in hosts):
            return base
    raise AssertionError("no free base port found")


@pytest.fixture
def cluster_home(home: Path) -> Iterator[Path]:
    yield home
    LocalCluster(home / "local").down()
    kill_mentioning(str(home))


def test_busy_port_is_refused_before_anything_starts(
    cluster_home: Path, capstan: Run
) -> None:
    base = free_base_port(1)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.bind(("127.0.0.1", base))
        busy.listen(1)
        r = capstan("up", "--nodes", "1", "--runtime", "process", "--base-port", str(base))
    assert r.code == 1
    assert f"cannot listen on 127.0.0.1:{base}" in r.err
    assert "choose another --base-port" in r.err
    assert not (cluster_home / "local" / "cluster.json").exists()
    assert not (cluster_home / "local" / "pki").exists()
    assert processes_mentioning(str(cluster_home)) == []


def test_status_and_down_without_a_cluster(cluster_home: Path, capstan: Run) -> None:
    r = capstan("status")
    assert r.code == 0
    assert "no local cluster in" in r.out
    r = capstan("down")
    assert r.code == 0
    assert "no local cluster in" in r.out


@pytest.mark.slow
@pytest.mark.skipif(busybox_binary() is None, reason="needs a static busybox")
def test_up_apply_logs_delete_down(cluster_home: Path, capstan: Run, tmp_path: Path) -> None:
    home = cluster_home
    base = free_base_port(2)
    r = capstan("up", "--nodes", "2", "--runtime", "process", "--base-port", str(base))
    assert r.code == 0, r.err
    assert f"local cluster up: orchestrator 127.0.0.1:{base}, 2 nodes (process runtime)" in r.out
    assert ContextConfig.load().current == "local"

    r = capstan("up", "--nodes", "2", "--runtime", "process", "--base-port", str(base))
    assert r.code == 0
    assert "is already up" in r.out
    record = LocalCluster(home / "local").load()
    assert record is not None
    assert len(record.processes) == 3  # no second cluster was started

    r = capstan("status")
    assert r.code == 0
    assert r.out.count(" yes ") == 3
    assert "nodes ready:   2/2" in r.out

    r = capstan("get", "nodes", "-o", "json")
    assert r.code == 0, r.err
    nodes = json.loads(r.out)
    assert [(n["name"], n["state"], n["address"]) for n in nodes] == [
        ("node-1", "ready", f"127.0.0.2:{base + 2}"),
        ("node-2", "ready", f"127.0.0.3:{base + 2}"),
    ]

    app = tmp_path / "shop.yaml"
    app.write_text(APP)
    r = capstan("apply", "-f", str(app), "--timeout", "90s")
    assert r.code == 0, r.out + r.err
    assert "web: create (replicas 2)" in r.out
    assert "web 2/2 running" in r.out

    r = capstan("get", "workloads", "--app", "shop", "-o", "json")
    workloads = json.loads(r.out)
    assert sorted(w["state"] for w in workloads) == ["running", "running"]
    assert sorted(w["node"] for w in workloads) == ["node-1", "node-2"]  # spread

    # A viewer may read but not change: refused with exit 4, and nothing changed.
    viewer = Authority.open(home / "local" / "pki").issue("user", "bob", role="viewer")
    assert viewer.key_pem is not None
    (home / "bob.crt").write_bytes(viewer.chain_pem)
    (home / "bob.key").write_bytes(viewer.key_pem)
    config = ContextConfig.load()
    local = config.contexts["local"]
    config.set(Context("viewer", local.endpoint, local.ca, home / "bob.crt", home / "bob.key"))
    config.save()
    app.write_text(APP.replace("replicas: 2", "replicas: 5"))
    r = capstan("apply", "-f", str(app), "--context", "viewer", "--no-wait")
    assert r.code == 4, r
    assert r.err.startswith("error: Apply: permission denied:")
    assert capstan("get", "nodes", "--context", "viewer").code == 0
    (summary,) = json.loads(capstan("get", "apps", "-o", "json").out)
    assert (summary["generation"], summary["desired"]) == ("1", 2)

    def logged() -> bool:
        out = capstan("logs", "shop/web.0")
        return out.code == 0 and "web says hello" in out.out

    wait_for(logged, 60, "the instance's output")
    r = capstan("describe", "app", "shop")
    assert r.code == 0
    assert "Instances:" in r.out
    assert "web.1" in r.out

    r = capstan("delete", "app", "shop")
    assert r.code == 0, r.err
    wait_for(
        lambda: json.loads(capstan("get", "workloads", "-o", "json").out) == [],
        60,
        "the workloads to be removed",
    )
    r = capstan("logs", "shop/web.0")
    assert r.code == 3, r

    pids = [(p.pid, p.start_ticks) for p in record.processes]
    r = capstan("down")
    assert r.code == 0, r.err
    assert "is down (PKI kept" in r.out
    assert not any(proc.is_same_alive(pid, ticks) for pid, ticks in pids)
    assert processes_mentioning(str(home)) == []
    assert not (home / "local" / "cluster.json").exists()
    assert (home / "local" / "pki" / "state.json").exists()
    r = capstan("get", "nodes")
    assert r.code == 5  # the context is kept, its orchestrator is gone


@pytest.mark.slow
@pytest.mark.skipif(busybox_binary() is None, reason="needs a static busybox")
def test_down_removes_running_workloads_and_purge(
    cluster_home: Path, capstan: Run, tmp_path: Path
) -> None:
    home = cluster_home
    base = free_base_port(1)
    r = capstan("up", "--nodes", "1", "--runtime", "process", "--base-port", str(base))
    assert r.code == 0, r.err
    app = tmp_path / "shop.yaml"
    app.write_text(APP.replace("replicas: 2", "replicas: 1"))
    r = capstan("apply", "-f", str(app), "--timeout", "90s")
    assert r.code == 0, r.out + r.err
    # The instance runs (sandboxed, nothing in its command line names the node's
    # directory: its recorded pid is the one to look at).
    state = NodeState(home / "local" / "nodes" / "node-1" / STATE_DB)
    try:
        running = [r for r in state.all() if r.pid and proc.is_same_alive(r.pid, r.start_ticks)]
    finally:
        state.close()
    assert running

    r = capstan("down", "--purge")
    assert r.code == 0, r.err
    assert "is down and purged" in r.out
    assert processes_mentioning(str(home)) == []
    assert not any(proc.is_same_alive(r.pid or 0, r.start_ticks) for r in running)
    assert not (home / "local").exists()
    assert "local" not in ContextConfig.load().contexts


@pytest.mark.slow
@pytest.mark.docker
def test_docker_demo_up_and_down(
    cluster_home: Path, capstan: Run, docker_client: docker.DockerClient, busybox_image: str
) -> None:
    home = cluster_home
    base = free_base_port(2)
    r = capstan("up", "--nodes", "2", "--runtime", "docker", "--base-port", str(base), "--demo")
    assert r.code == 0, r.out + r.err
    assert "hello 3/3 running" in r.out
    record = LocalCluster(home / "local").load()
    assert record is not None
    assert record.trust_domain.startswith("local-")  # never shared with another cluster

    def ours() -> list[str]:
        found = docker_client.containers.list(all=True, filters={"label": "capstan.node"})
        prefix = f"spiffe://{record.trust_domain}/node/"
        return [c.name for c in found if c.labels["capstan.node"].startswith(prefix)]

    assert len(ours()) == 3
    r = capstan("get", "workloads", "-o", "json")
    assert {w["node"] for w in json.loads(r.out)} == {"node-1", "node-2"}

    def our_tags() -> list[str]:
        prefixes = tuple(namespace(p.node_id) for p in record.node_records())
        tags = [t for image in docker_client.images.list() for t in image.tags]
        return [t for t in tags if t.startswith(prefixes)]

    assert len(our_tags()) == 2  # the demo image, adopted by each node

    r = capstan("down")
    assert r.code == 0, r.err
    assert ours() == []
    assert our_tags() == []
    assert processes_mentioning(str(home)) == []


@pytest.mark.slow
def test_a_process_that_dies_is_reported_with_its_log_and_nothing_is_left(
    cluster_home: Path, capstan: Run
) -> None:
    home = cluster_home
    base = free_base_port(1)
    r = capstan("up", "--nodes", "1", "--runtime", "process", "--base-port", str(base))
    assert r.code == 0, r.err
    assert capstan("down").code == 0
    # The orchestrator cannot start without its token signing keys.
    shutil.rmtree(home / "local" / "pki" / "token-keys")
    r = capstan("up", "--nodes", "1", "--runtime", "process", "--base-port", str(base))
    assert r.code == 1
    first = r.err.splitlines()[0]
    assert first == (
        "error: orchestrator exited before it was ready; "
        f"{home / 'local' / 'orchestrator' / 'orchestrator.log'} ends with:"
    )
    assert "token-keys" in r.err  # the log's own explanation is shown
    assert "token-keys" in (home / "local" / "orchestrator" / "orchestrator.log").read_text()
    assert processes_mentioning(str(home)) == []
    assert not (home / "local" / "cluster.json").exists()
