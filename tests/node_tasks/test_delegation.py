"""Delegated image distribution between real joined nodes, and the token's single use."""

from __future__ import annotations

import threading

import pytest

from protos import control_pb2, gateway_pb2, node_pb2
from protos.wire.errors import WRONG_SERVER, NodeCallError
from protos.wire.images import content_ref
from protos.wire.nodeclient import NodeClient
from tests.waiting import wait_for

from .conftest import IMAGE, Cluster, application


def test_image_spreads_peer_to_peer_and_every_step_is_audited(cluster: Cluster) -> None:
    n1 = cluster.join("node-1", "127.0.0.2", image=True)
    n2 = cluster.join("node-2", "127.0.0.3")
    n3 = cluster.join("node-3", "127.0.0.4")
    assert not n2.runtime.image_exists(IMAGE) and not n3.runtime.image_exists(IMAGE)
    cluster.wait_ready("node-1", "node-2", "node-3")
    cluster.wait_image_known("node-1")

    cluster.orch.control().Apply(control_pb2.ApplyRequest(app=application(3)))
    pinned = cluster.pinned(n1.runtime)  # what the apply pinned, what every token names

    def all_running() -> bool:
        ws = cluster.workloads()
        return len(ws) == 3 and all(w.state == "running" for w in ws)

    wait_for(all_running, what="3 replicas running")
    placed = sorted(w.node for w in cluster.workloads())
    assert placed == ["node-1", "node-2", "node-3"]
    for m in (n1, n2, n3):
        assert len(m.running()) == 1, m.name
    # Nodes 2 and 3 hold the image now (under its content tag), and say so.
    kept = content_ref(pinned)
    assert n2.runtime.image_exists(kept) and n3.runtime.image_exists(kept)
    tracker = cluster.orch.orch.reconciler.tracker
    assert tracker.has_image("node-2", pinned) and tracker.has_image("node-3", pinned)

    events = cluster.audit()
    for target in (n2, n3):
        issued = [
            e for e in events if e["event"] == "delegation.issued" and e["target"] == target.name
        ]
        assert len(issued) == 1
        assert issued[0]["source"] == "node-1" and issued[0]["op"] == "image.export"
        assert issued[0]["res"] == pinned
        minted = [e for e in events if e["event"] == "token.minted" and e["sub"] == target.node_id]
        assert [(e["aud"], e["op"], e["res"]) for e in minted] == [
            (n1.node_id, "image.export", pinned)
        ]
        done = [
            e
            for e in events
            if e["event"] == "task.completed" and e["request_id"] == issued[0]["request_id"]
        ]
        assert len(done) == 1 and done[0]["ok"] is True and done[0]["node"] == target.name
    # The node that had the image was never given a fetch, and nothing was refused.
    assert not any(e["event"] == "delegation.issued" and e["target"] == "node-1" for e in events)
    assert not any(e["event"].endswith(".refused") for e in events)
    for m in (n2, n3):
        outcomes = list(m.node.tasks.outcomes)
        assert [(o.kind, o.ok, o.completed) for o in outcomes] == [("image.fetch", True, True)]
    # Each delegated token was presented once and accepted: no refusal on the source.
    assert n1.node.agent.audit.entries() == []


def test_delegation_token_works_once_and_only_from_the_source_it_names(
    cluster: Cluster,
) -> None:
    captured: list[gateway_pb2.Task] = []
    arrived = threading.Event()

    def tap(tasks: list[gateway_pb2.Task]) -> None:
        captured.extend(tasks)
        arrived.set()

    n1 = cluster.join("node-1", "127.0.0.2", image=True, labels={"role": "source"})
    n2 = cluster.join("node-2", "127.0.0.3", labels={"role": "target"}, on_tasks=tap)
    n3 = cluster.join("node-3", "127.0.0.4", image=True, labels={"role": "bystander"})
    cluster.wait_ready("node-1", "node-2", "node-3")
    cluster.wait_image_known("node-1")
    cluster.orch.control().Apply(
        control_pb2.ApplyRequest(app=application(1, constraints={"role": "target"}))
    )
    wait_for(arrived.is_set, what="a task for node-2")
    task = captured[0]
    assert task.kind == "image.fetch" and task.resource == cluster.pinned(n1.runtime)
    assert task.source_id in (n1.node_id, n3.node_id)
    source, other = (n1, n3) if task.source_id == n1.node_id else (n3, n1)

    # The same token sent to a node that is not the source named in the task is never
    # presented: the handshake there accepts only the source's identity.
    hijacked = gateway_pb2.Task()
    hijacked.CopyFrom(task)
    hijacked.request_id = "f" * 32
    hijacked.source_address = other.address
    n2.node.tasks.submit([hijacked])
    wait_for(lambda: len(n2.node.tasks.outcomes) == 1, what="the hijacked task's outcome")
    outcome = n2.node.tasks.outcomes[0]
    assert not outcome.ok and WRONG_SERVER in outcome.message
    assert not outcome.completed  # the orchestrator never issued that request id
    assert other.node.agent.audit.entries() == []  # no call reached it
    assert n2.runtime.images() == []

    # The genuine task: fetched, completed, the workload runs.
    n2.node.tasks.submit([task])
    wait_for(lambda: len(n2.node.tasks.outcomes) == 2, what="the fetch")
    assert n2.node.tasks.outcomes[1].ok and n2.node.tasks.outcomes[1].completed
    assert n2.runtime.image_exists(content_ref(task.resource))
    wait_for(lambda: n2.running() != [], what="the workload on node-2")

    # Replaying the token, with the very certificate it is bound to, is refused.
    before = (source.runtime.images(), source.names())
    with (
        NodeClient(source.address, credentials=n2.credentials(), expect=source.node_id) as client,
        pytest.raises(NodeCallError) as err,
    ):
        list(client.stream("image.export", node_pb2.ImageRef(ref=task.resource), task.token))
    assert err.value.code.name == "UNAUTHENTICATED"
    assert (source.runtime.images(), source.names()) == before
    refusals = source.node.agent.audit.entries()
    assert len(refusals) == 1 and refusals[0]["caller"] == n2.node_id
    assert "replay" in refusals[0]["reason"]

    # A repeat of the same task (same request id) is ignored, not fetched again.
    n2.node.tasks.submit([task])
    assert n2.node.tasks.ignored == 1 and len(n2.node.tasks.outcomes) == 2
