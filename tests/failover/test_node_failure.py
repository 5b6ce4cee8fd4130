"""A node agent killed with SIGKILL, paused with SIGSTOP, or cut off from the orchestrator:
real ``capstan node join`` processes, real mTLS, process runtime."""

from __future__ import annotations

import threading
import time
from collections import Counter

from protos import control_pb2
from tests.failover._agents import (
    audit,
    node_state,
    restart_agent,
    sleeper_app,
    workloads,
)
from tests.failover.conftest import GRACE, ProcCluster
from tests.waiting import wait_for

REPLICAS = 3
MAX_UNAVAILABLE = 1


def _running(c: ProcCluster, avoid: str = "") -> list[control_pb2.Workload]:
    return [
        w
        for w in workloads(c.orch)
        if w.desired == "running" and w.state == "running" and w.node != avoid
    ]


def _deploy(c: ProcCluster) -> str:
    """Three instances, one per node; returns the node of instance 0."""
    app = sleeper_app("svc", REPLICAS, max_unavailable=MAX_UNAVAILABLE)
    c.orch.control().Apply(control_pb2.ApplyRequest(app=app))
    wait_for(lambda: len(_running(c)) == REPLICAS, 30, "three running instances")
    assert len({w.node for w in _running(c)}) == REPLICAS  # spread: one per node
    return next(w.node for w in _running(c) if w.index == 0)


def _live_per_workload(c: ProcCluster) -> Counter[str]:
    live: Counter[str] = Counter()
    for agent in c.agents.values():
        live.update(agent.containers().values())
    return live


class _Watch:
    """Samples the running count every 20 ms and keeps the longest stretch under budget."""

    def __init__(self, c: ProcCluster) -> None:
        self._c = c
        self._stop = threading.Event()
        self.lowest = REPLICAS
        self.longest_below_budget = 0.0
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        below_since: float | None = None
        while not self._stop.is_set():
            n = len(_running(self._c))
            now = time.monotonic()
            self.lowest = min(self.lowest, n)
            if n < REPLICAS - MAX_UNAVAILABLE:
                below_since = now if below_since is None else below_since
                self.longest_below_budget = max(self.longest_below_budget, now - below_since)
            else:
                below_since = None
            self._stop.wait(0.02)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


def test_kill9_agent_workloads_replaced_and_stale_copies_fenced_on_restart(
    proc_cluster: ProcCluster,
) -> None:
    c = proc_cluster
    victim = _deploy(c)
    agent = c.agents[victim]
    stale = agent.containers()
    assert stale, "the victim runs an instance"

    watch = _Watch(c)
    agent.kill9()
    wait_for(lambda: node_state(c.orch, victim) == "dead", 15, "node declared dead")
    wait_for(
        lambda: len(_running(c, avoid=victim)) == REPLICAS, 30, "instances running elsewhere"
    )
    watch.stop()
    assert not [w.id for w in workloads(c.orch) if w.node == victim]
    # Never below replicas - maxUnavailable for longer than the detection time.
    assert watch.longest_below_budget <= GRACE, watch.longest_below_budget
    # The killed agent's workload processes outlive it (no self-destruction): the
    # duplicates exist until the node is back and fenced.
    assert agent.containers() == stale

    restart_agent(c.orch, c.root, agent)
    wait_for(lambda: not agent.containers(), 20, "stale containers fenced on restart")
    wait_for(lambda: node_state(c.orch, victim) == "ready", 15, "node back")
    live = _live_per_workload(c)
    assert sorted(live) == sorted(w.id for w in workloads(c.orch))
    assert set(live.values()) == {1}, f"duplicates: {live}"
    events = [e["event"] for e in audit(c.orch) if e.get("node") == victim]
    assert "node.dead" in events and "node.back" in events


def test_sigstopped_agent_is_fenced_on_sigcont(proc_cluster: ProcCluster) -> None:
    c = proc_cluster
    victim = _deploy(c)
    agent = c.agents[victim]
    stale = agent.containers()
    agent.pause()
    try:
        wait_for(lambda: node_state(c.orch, victim) == "dead", 15, "paused node dead")
        wait_for(
            lambda: len(_running(c, avoid=victim)) == REPLICAS, 30, "instances running elsewhere"
        )
        # Paused, the node did nothing to its workloads: the old copies still run.
        assert agent.containers() == stale
    finally:
        agent.resume()
    wait_for(lambda: not agent.containers(), 20, "old copies fenced after SIGCONT")
    wait_for(lambda: node_state(c.orch, victim) == "ready", 15, "node back")
    live = _live_per_workload(c)
    assert set(live.values()) == {1} and len(live) == REPLICAS, f"duplicates: {live}"
    assert len(_running(c)) == REPLICAS


def test_partitioned_node_keeps_its_workloads_running(proc_cluster: ProcCluster) -> None:
    c = proc_cluster
    _deploy(c)
    before = {name: a.containers() for name, a in c.agents.items()}
    assert all(before.values())
    c.stop_orchestrator()
    # Each agent has failed to reach the orchestrator several times over (backoff
    # 0.5 s, 1 s, 2 s...): well past the grace a node could count down on its own.
    offsets = {a.name: a.log.read_text().count("reconnecting in") for a in c.agents.values()}
    wait_for(
        lambda: all(
            a.log.read_text().count("reconnecting in") >= offsets[a.name] + 3
            for a in c.agents.values()
        ),
        30,
        "every agent cut off",
    )
    assert {name: a.containers() for name, a in c.agents.items()} == before
    assert all(a.process is not None and a.process.poll() is None for a in c.agents.values())
