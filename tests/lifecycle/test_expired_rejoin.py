"""A node off for longer than its certificate's life rejoins with a fresh join token
bound to its name and keeps its identity and its workloads' history. Nothing is
automatic: the operator issues the token and the node's old membership files go."""

from __future__ import annotations

import time

import pytest

from node.agent import run_joined_node
from node.join import JoinOptions, ensure_joined
from pki.errors import ConfigError
from protos import control_pb2
from tests.security.conftest import Cluster
from tests.waiting import wait_for

from .conftest import NODE_TTL
from .test_revocation import app


def test_expired_node_rejoins_with_a_name_bound_token_and_keeps_its_identity(
    cluster: Cluster,
) -> None:
    admin = cluster.admin()
    admin.Apply(app(2))
    wait_for(
        lambda: sum(w.state == "running" for w in cluster.workloads()) == 2,
        what="two running instances",
    )
    before = cluster.orch.orch.state.node("node-1")
    assert before is not None
    state = cluster.root / "node-1"
    cluster.nodes.pop("node-1").stop(0)

    # Later than its certificate's life: the agent refuses to start with it.
    later = time.time() + NODE_TTL + 60
    with pytest.raises(ConfigError, match="expired"):
        run_joined_node(state, runtime_kind="process", clock=lambda: later)

    # The documented path: a rejoin token bound to the name, the membership files go
    # (the rest of the state directory, containers and volumes, stays).
    token = admin.CreateJoinToken(control_pb2.JoinTokenRequest(name="node-1")).token
    for name in ("joined.json", "node.crt", "node.key"):
        (state / name).unlink()
    joined, reused = ensure_joined(
        state,
        cluster.orch.join_target,
        token,
        cluster.root / "cluster-ca.crt",
        JoinOptions(name="node-1", listen="127.0.0.31:0", ips=("127.0.0.31",), runtime="process"),
    )
    assert not reused
    assert joined.node_id == before.id
    cluster.nodes["node-1"] = run_joined_node(state, runtime_kind="process")
    wait_for(
        lambda: (n := cluster.orch.orch.state.node("node-1")) is not None and n.state == "ready",
        what="node-1 ready again",
    )
    after = cluster.orch.orch.state.node("node-1")
    assert after is not None
    assert after.id == before.id and after.name == before.name
    assert after.cert_serial != before.cert_serial and after.joined_at > before.joined_at
    # Its workloads' history is the node's still (same name, same records).
    events = [e for e in cluster.audit() if e.get("node") == "node-1"]
    assert [e["event"] for e in events].count("node.joined") == 2


def test_a_plain_token_cannot_take_an_existing_name(cluster: Cluster) -> None:
    token = cluster.admin().CreateJoinToken(control_pb2.JoinTokenRequest()).token
    state = cluster.root / "intruder"
    from node.join import JoinError

    with pytest.raises(JoinError, match="refused"):
        ensure_joined(
            state,
            cluster.orch.join_target,
            token,
            cluster.root / "cluster-ca.crt",
            JoinOptions(
                name="node-1", listen="127.0.0.39:0", ips=("127.0.0.39",), runtime="process"
            ),
        )
    node = cluster.orch.orch.state.node("node-1")
    assert node is not None and node.state == "ready"
