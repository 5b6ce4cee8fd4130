"""Failover fixtures: an in-process orchestrator (heartbeat 0.5 s, grace 2 s) and node
agents as real ``capstan node join`` processes on 127.0.0.3x, process runtime."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.control_api.conftest import Running, stop_orchestrator
from tests.failover._agents import Agent, join_agent, node_states, start_orch
from tests.waiting import wait_for

HEARTBEAT = 0.5
GRACE = 2.0


@dataclass
class ProcCluster:
    orch: Running
    root: Path
    agents: dict[str, Agent] = field(default_factory=dict)
    orch_stopped: bool = False

    def stop_orchestrator(self) -> None:
        self.orch_stopped = True
        stop_orchestrator(self.orch)

    def join(self, name: str, ip: str) -> Agent:
        return self.join_runtime(name, ip, "process")

    def join_runtime(self, name: str, ip: str, runtime: str) -> Agent:
        agent = join_agent(self.orch, self.root, name, ip, runtime)
        self.agents[name] = agent
        return agent


@pytest.fixture
def proc_cluster(tmp_path: Path) -> Iterator[ProcCluster]:
    orch = start_orch(tmp_path / "orch", heartbeat=HEARTBEAT, grace=GRACE)
    c = ProcCluster(orch, tmp_path)
    try:
        for i in (1, 2, 3):
            c.join(f"node-{i}", f"127.0.0.3{i}")
        wait_for(
            lambda: list(node_states(orch).values()) == ["ready"] * 3, 20, "three ready nodes"
        )
        yield c
    finally:
        for agent in c.agents.values():
            agent.cleanup()
        if not c.orch_stopped:
            stop_orchestrator(orch)
