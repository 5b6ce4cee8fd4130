"""``capstan node join --mode pull`` as a real process: it converges to its assignments,
and a state directory joined in one mode refuses to restart in the other."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from node.join import JoinOptions, ensure_joined
from node.runtime.process import ProcessRuntime, ensure_busybox_image
from protos import control_pb2
from tests.node_process.conftest import kill_recorded
from tests.waiting import wait_for

from .conftest import IMAGE, Cluster, application

ROOT = Path(__file__).resolve().parents[2]


def capstan(*args: str) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.pop("CAPSTAN_JOIN_TOKEN", None)
    return subprocess.Popen(
        [sys.executable, "-m", "orchestrator.cli", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def test_cli_pull_node_runs_its_assignments(cluster: Cluster, tmp_path: Path) -> None:
    state = tmp_path / "pull-cli"
    token = cluster.orch.control().CreateJoinToken(control_pb2.JoinTokenRequest(name="pcli")).token
    options = JoinOptions(
        name="pcli", listen="127.0.0.6:0", runtime="process", mode="pull", cpus=2, memory=1 << 30
    )
    joined, _ = ensure_joined(state, cluster.orch.join_target, token, cluster.ca_file, options)
    # Pull nodes fetch nothing from peers: the image is there before the agent starts.
    seed = ProcessRuntime(joined.node_id, state)
    ensure_busybox_image(seed, IMAGE)
    seed.close()

    wrong = capstan("node", "join", "--state-dir", str(state), "--mode", "push")
    _, err = wrong.communicate(timeout=60)
    assert wrong.returncode == 1
    assert "joined in pull mode, not push" in err

    agent = capstan("node", "join", "--state-dir", str(state), "--mode", "pull")
    try:
        assert agent.stdout is not None
        line = agent.stdout.readline()
        assert line.startswith(f"node {joined.node_id} listening on 127.0.0.6:"), line
        cluster.wait_ready("pcli")
        cluster.orch.control().Apply(control_pb2.ApplyRequest(app=application(1)))
        wait_for(
            lambda: [w.state for w in cluster.workloads()] == ["running"],
            what="the pull node to run its workload",
        )
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(30) == 0
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait(30)
        kill_recorded(state)
