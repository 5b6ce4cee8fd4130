"""Pull mode end to end, and the gateway's refusals of watches and completions."""

from __future__ import annotations

import threading

import grpc
import pytest

from orchestrator.store import keys
from protos import control_pb2, gateway_pb2
from tests.waiting import wait_for

from .conftest import Cluster, Member, application


def _code(fn: object, *args: object) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as err:
        fn(*args)  # type: ignore[operator]
    return err.value.code()


def test_pull_node_converges_without_ever_being_called(cluster: Cluster) -> None:
    p = cluster.join("pull-1", "127.0.0.2", mode="pull", image=True)
    assert p.node.puller is not None
    # Nobody can call this node: its NodeService is down. It only watches and reports.
    p.node.agent.server.stop(0).wait()
    cluster.wait_ready("pull-1")
    nodes = cluster.orch.control().ListNodes(control_pb2.ListNodesRequest()).nodes
    assert [(n.name, n.mode) for n in nodes] == [("pull-1", "pull")]
    control = cluster.orch.control()

    control.Apply(control_pb2.ApplyRequest(app=application(2)))

    def states() -> list[str]:
        return sorted(w.state for w in cluster.workloads())

    wait_for(lambda: len(p.running()) == 2, what="2 containers on the pull node")
    wait_for(lambda: states() == ["running", "running"], what="the orchestrator to see them")

    control.Apply(control_pb2.ApplyRequest(app=application(1)))
    wait_for(lambda: len(p.names()) == 1, what="scale down to 1")
    wait_for(lambda: states() == ["running"], what="the removed workload retired")
    (kept,) = cluster.workloads()
    assert p.names() == [kept.container]

    control.DeleteApp(control_pb2.AppRef(tenant="default", name="shop"))
    wait_for(lambda: p.names() == [], what="every container removed")
    wait_for(lambda: not control.ListApps(control_pb2.ListAppsRequest()).apps, what="app deleted")
    # Nothing ever reached its NodeService, and nothing was refused anywhere.
    assert p.node.agent.audit.entries() == []
    assert not any(e["event"].endswith(".refused") for e in cluster.audit())
    assert p.node.puller.streams >= 1 and p.node.puller.received >= 3


def test_a_node_may_watch_only_its_own_assignments(cluster: Cluster) -> None:
    a = cluster.join("node-a", "127.0.0.2", mode="pull", image=True, labels={"n": "a"})
    b = cluster.join("node-b", "127.0.0.3", mode="pull", image=True, labels={"n": "b"})
    cluster.wait_ready("node-a", "node-b")
    control = cluster.orch.control()
    control.Apply(control_pb2.ApplyRequest(app=application(1, name="mine", constraints={"n": "a"})))
    control.Apply(
        control_pb2.ApplyRequest(app=application(1, name="theirs", constraints={"n": "b"}))
    )
    wait_for(lambda: len(b.running()) == 1 and len(a.running()) == 1, what="both apps running")

    stub = cluster.gateway(a)
    assert _code(lambda: next(iter(stub.Watch(gateway_pb2.WatchRequest(node="node-b"))))) == (
        grpc.StatusCode.PERMISSION_DENIED
    )
    refused = [e for e in cluster.audit() if e["event"] == "watch.refused"]
    assert [(e["node"], e["asked_for"]) for e in refused] == [("node-a", "node-b")]

    # Its own watch holds its own workloads and nothing of node-b's.
    own = stub.Watch(gateway_pb2.WatchRequest(node="node-a"))
    first = next(iter(own))
    own.cancel()
    assert [x.workload_id for x in first.assignments] == ["default.mine.web.0"]
    assert len(b.running()) == 1  # untouched


def _capture(cluster: Cluster) -> tuple[Member, Member, list[gateway_pb2.Task]]:
    """node-1 has the image, node-2 gets a fetch task that the test holds back."""
    captured: list[gateway_pb2.Task] = []
    arrived = threading.Event()

    def hold(tasks: list[gateway_pb2.Task]) -> None:
        captured.extend(tasks)
        arrived.set()

    n1 = cluster.join("node-1", "127.0.0.2", image=True, labels={"role": "source"})
    n2 = cluster.join("node-2", "127.0.0.3", labels={"role": "target"}, on_tasks=hold)
    cluster.wait_ready("node-1", "node-2")
    cluster.wait_image_known("node-1")
    cluster.orch.control().Apply(
        control_pb2.ApplyRequest(app=application(1, constraints={"role": "target"}))
    )
    wait_for(arrived.is_set, what="a task for node-2")
    return n1, n2, captured


def test_completions_only_from_the_node_given_the_task_and_only_once(cluster: Cluster) -> None:
    n1, n2, captured = _capture(cluster)
    task = captured[0]

    def outstanding() -> list[str]:
        entries = cluster.orch.run(cluster.orch.orch.store.range(keys.TASKS))
        return [e.key.rsplit("/", 1)[-1] for e in entries]  # type: ignore[attr-defined]

    assert outstanding() == [task.request_id]
    result = gateway_pb2.TaskResult(request_id=task.request_id, ok=True, message="done")

    # Another node completing node-2's task, and node-2 completing an unknown id.
    assert _code(cluster.gateway(n1).Complete, result) == grpc.StatusCode.PERMISSION_DENIED
    unknown = gateway_pb2.TaskResult(request_id="0" * 32, ok=True)
    assert _code(cluster.gateway(n2).Complete, unknown) == grpc.StatusCode.PERMISSION_DENIED
    # Nothing changed: still outstanding, the workload still waits, no image claimed.
    assert outstanding() == [task.request_id]
    (w,) = cluster.workloads()
    assert w.state == "fetching"
    assert not cluster.orch.orch.reconciler.tracker.has_image("node-2", task.resource)
    assert not any(e["event"] == "task.completed" for e in cluster.audit())

    # The node it was given to runs it: fetched, completed once, the workload runs.
    n2.node.tasks.submit([task])
    wait_for(lambda: len(n2.running()) == 1, what="the workload on node-2")
    assert outstanding() == []
    # A second completion of the same task is refused and changes nothing.
    again = gateway_pb2.TaskResult(request_id=task.request_id, ok=False, message="replayed")
    assert _code(cluster.gateway(n2).Complete, again) == grpc.StatusCode.PERMISSION_DENIED
    events = cluster.audit()
    done = [e for e in events if e["event"] == "task.completed"]
    assert [(e["node"], e["ok"]) for e in done] == [("node-2", True)]
    refused = [e for e in events if e["event"] == "complete.refused"]
    assert [(e["node"], e["request_id"]) for e in refused] == [
        ("node-1", task.request_id),
        ("node-2", "0" * 32),
        ("node-2", task.request_id),
    ]
    assert "given to node-2, not node-1" in refused[0]["reason"]
    assert "already completed" in refused[2]["reason"] or "not outstanding" in refused[2]["reason"]
    wait_for(lambda: cluster.workloads()[0].state == "running", what="the workload running")
