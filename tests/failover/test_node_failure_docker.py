"""kill -9 of a node agent AND its containers, with the Docker runtime (a host that
died): the workloads are replaced elsewhere within the detection time, and the node
coming back runs no duplicate."""

from __future__ import annotations

import contextlib
import secrets
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from protos import control_pb2
from tests.control_api.conftest import stop_orchestrator
from tests.failover._agents import (
    node_state,
    node_states,
    restart_agent,
    sleeper_app,
    start_orch,
    workloads,
)
from tests.failover.conftest import GRACE, HEARTBEAT, ProcCluster
from tests.waiting import wait_for

pytestmark = pytest.mark.docker

REPLICAS = 3


def _running(c: ProcCluster, avoid: str = "") -> list[control_pb2.Workload]:
    return [w for w in workloads(c.orch) if w.state == "running" and w.node != avoid]


def _containers(
    client: docker.DockerClient, node_id: str, *, stopped: bool = False
) -> Counter[str]:
    """Workload id -> containers of it on that node (running only, or all), from the engine."""
    # The low-level list (one call, no per-container inspect): a container the
    # fence removes meanwhile cannot make it fail.
    found = client.api.containers(all=stopped, filters={"label": f"capstan.node={node_id}"})
    return Counter((ct.get("Labels") or {}).get("capstan.workload", "") for ct in found)


@pytest.fixture
def docker_cluster(
    tmp_path: Path, docker_client: docker.DockerClient, busybox_image: str
) -> Iterator[ProcCluster]:
    orch = start_orch(tmp_path / "orch", heartbeat=HEARTBEAT, grace=GRACE)
    c = ProcCluster(orch, tmp_path)
    tag = secrets.token_hex(3)  # the engine is shared with other runs: unique node ids
    try:
        for i in (1, 2, 3):
            agent = c.join_runtime(f"dk{tag}-{i}", f"127.0.0.4{i}", "docker")
            assert agent.runtime == "docker"
        wait_for(
            lambda: list(node_states(orch).values()) == ["ready"] * 3, 30, "three ready nodes"
        )
        yield c
    finally:
        for agent in c.agents.values():
            agent.cleanup()
            for ct in docker_client.containers.list(
                all=True, filters={"label": f"capstan.node={agent.node_id}"}
            ):
                with contextlib.suppress(docker.errors.NotFound):
                    ct.remove(force=True)
        if not c.orch_stopped:
            stop_orchestrator(orch)


def test_host_death_is_replaced_and_the_returning_node_runs_no_duplicate(
    docker_cluster: ProcCluster, docker_client: docker.DockerClient
) -> None:
    c = docker_cluster
    c.orch.control().Apply(control_pb2.ApplyRequest(app=sleeper_app("svc", REPLICAS)))
    wait_for(lambda: len(_running(c)) == REPLICAS, 60, "three running instances")
    victim = next(w.node for w in _running(c) if w.index == 0)
    agent = c.agents[victim]
    assert sum(_containers(docker_client, agent.node_id).values()) == 1

    # The host dies: the agent and its containers, at once.
    agent.kill9()
    for ct in docker_client.api.containers(filters={"label": f"capstan.node={agent.node_id}"}):
        docker_client.api.kill(ct["Id"])
    wait_for(lambda: node_state(c.orch, victim) == "dead", 15, "node declared dead")
    wait_for(
        lambda: len(_running(c, avoid=victim)) == REPLICAS, 30, "instances running elsewhere"
    )

    restart_agent(c.orch, c.root, agent)
    wait_for(lambda: node_state(c.orch, victim) == "ready", 20, "node back")
    # Its killed copy was replaced elsewhere: fenced (removed), not restarted.
    wait_for(
        lambda: not _containers(docker_client, agent.node_id, stopped=True), 20, "stale copy fenced"
    )
    live: Counter[str] = Counter()
    for a in c.agents.values():
        live.update(_containers(docker_client, a.node_id))
    assert sorted(live) == sorted(w.id for w in workloads(c.orch))
    assert set(live.values()) == {1}, f"duplicates: {live}"
