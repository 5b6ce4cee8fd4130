"""End to end on real agents over real mTLS (process runtime): scale up and down,
rolling update, restart policy, delete, and an orchestrator restart mid-apply that
converges with no duplicate and no lost workload."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable

from orchestrator.delegation import may_delegate
from protos import control_pb2, gateway_pb2, topology_pb2
from tests.control_api.conftest import start_orchestrator, stop_orchestrator
from tests.security.conftest import Cluster
from tests.waiting import wait_for


def app(replicas: int, command: str = "sleep 600", restart: int = 0) -> control_pb2.ApplyRequest:
    return control_pb2.ApplyRequest(
        app=topology_pb2.Application(
            name="shop",
            services=[
                topology_pb2.Service(
                    name="web",
                    image="local/busybox:1",
                    command=["sh", "-c", command],
                    replicas=replicas,
                    restart=restart,  # type: ignore[arg-type]
                )
            ],
        )
    )


def running(c: Cluster) -> list[control_pb2.Workload]:
    return [w for w in c.workloads() if w.state == "running" and w.desired == "running"]


def containers(c: Cluster) -> Counter[str]:
    """Workload id -> how many containers of it run on any node (duplicates show > 1)."""
    seen: Counter[str] = Counter()
    for node in c.nodes.values():
        for ct in node.agent.runtime.list():
            if ct.state == "running":
                seen[ct.workload_id] += 1
    return seen


def test_scale_update_restart_policy_delete(cluster: Cluster) -> None:
    admin = cluster.admin()
    admin.Apply(app(2))
    wait_for(lambda: len(running(cluster)) == 2, what="2 running")
    admin.Apply(app(5))
    wait_for(lambda: len(running(cluster)) == 5, what="scaled up to 5")
    assert {w.node for w in running(cluster)} == {"node-1", "node-2"}  # spread
    admin.Apply(app(3))
    wait_for(
        lambda: len(running(cluster)) == 3 and len(cluster.workloads()) == 3, what="scaled down"
    )
    wait_for(lambda: sum(containers(cluster).values()) == 3, what="retired containers removed")

    # A changed template replaces every instance, one at a time, keeping the count.
    before = {w.id: w.container for w in running(cluster)}
    admin.Apply(app(3, command="sleep 601"))
    wait_for(
        lambda: (
            len(running(cluster)) == 3
            and all(w.container != before[w.id] for w in running(cluster))
        ),
        timeout=60,
        what="rolling update",
    )
    wait_for(
        lambda: containers(cluster) == Counter({w.id: 1 for w in running(cluster)}),
        what="old versions gone",
    )

    # restart: always (the default) restarts an exiting container; the count shows.
    admin.Apply(app(1, command="sleep 0.3; exit 3"))
    wait_for(
        lambda: any(w.restarts >= 2 for w in cluster.workloads()),
        timeout=60,
        what="restarts counted",
    )
    # restart: never leaves it failed with its exit code.
    admin.Apply(app(1, command="exit 4", restart=topology_pb2.RESTART_POLICY_NEVER))
    wait_for(
        lambda: [(w.state, w.exit_code) for w in cluster.workloads()] == [("failed", 4)],
        timeout=60,
        what="failed, not restarted",
    )

    admin.DeleteApp(control_pb2.AppRef(name="shop"))
    wait_for(lambda: cluster.workloads() == [] and not containers(cluster), what="deleted")
    # The app record goes last, once the reconciler saw every instance gone.
    wait_for(lambda: not admin.ListApps(control_pb2.ListAppsRequest()).apps, what="app record gone")


def test_orchestrator_restart_mid_apply_converges_without_duplicates(cluster: Cluster) -> None:
    port = cluster.orch.orch.port
    cluster.admin().Apply(app(8))
    stop_orchestrator(cluster.orch)  # mid-apply: some created, some not yet
    cluster.orch = start_orchestrator(cluster.root / "orch", port=port)
    wait_for(lambda: len(running(cluster)) == 8, timeout=60, what="8 running after the restart")
    wait_for(lambda: sum(containers(cluster).values()) == 8, what="no leftovers")
    assert set(containers(cluster).values()) == {1}  # no workload twice
    assert len({w.id for w in cluster.workloads()}) == 8


def test_no_delegation_between_pools_of_different_tenants() -> None:
    def node(name: str, pool: str) -> control_pb2.NodeRecord:
        return control_pb2.NodeRecord(name=name, pool=pool, state="ready")

    assert not may_delegate(node("a", "acme"), node("b", "globex"))
    assert may_delegate(node("a", "acme"), node("b", "acme"))
    assert may_delegate(node("a", "acme"), node("b", ""))
    assert may_delegate(node("a", ""), node("b", "acme"))
    assert not may_delegate(node("a", ""), node("a", ""))  # never itself
    assert not may_delegate(node("a", ""), control_pb2.NodeRecord(name="b", state="revoked"))


LATE = 2.0


def test_a_report_read_before_the_start_does_not_create_the_instance_again(
    cluster: Cluster,
) -> None:
    """Regression: a report read on the node before the orchestrator's create and start
    but arriving after them (a slow node, an orchestrator busy placing) lacked the new
    container (or showed it created, not running), and the orchestrator created (or
    started) it again (bench_scale at 1,000 nodes: six
    creates per instance; 0-2 per 50-replica deploy on Docker)."""
    for node in cluster.nodes.values():
        reporter = node.reporter
        build = reporter._status
        # Read now, before the apply: what the orchestrator hears first after its start.
        held: list[tuple[float, gateway_pb2.NodeStatus]] = [(time.monotonic(), build())]

        def late(build: Callable[[], gateway_pb2.NodeStatus] = build,
                 held: list[tuple[float, gateway_pb2.NodeStatus]] = held,
                 ) -> gateway_pb2.NodeStatus:
            # The node is slow to deliver: each report goes out LATE seconds after it was
            # read (the newest one that old enough; the oldest held one before that).
            now = time.monotonic()
            held.append((now, build()))
            while len(held) > 1 and held[1][0] <= now - LATE:
                held.pop(0)
            return held[0][1]

        reporter._status = late  # type: ignore[method-assign]
    cluster.admin().Apply(app(4))
    wait_for(lambda: len(running(cluster)) == 4, timeout=60, what="4 running")
    tracker = cluster.orch.orch.reconciler.tracker

    def reported_running() -> int:
        return sum(
            1
            for name in cluster.nodes
            for ct in tracker.containers(name).values()
            if ct.state == "running"
        )

    # Until the late reports show them: the ones read before the start came first.
    wait_for(lambda: reported_running() == 4, timeout=30, what="reports showing all 4")
    minted = cluster.audit()
    for op in ("container.create", "container.start"):
        calls = Counter(e["res"] for e in minted if e["event"] == "token.minted" and e["op"] == op)
        assert len(calls) == 4
        assert set(calls.values()) == {1}, f"{op} again: {calls}"
    assert set(containers(cluster).values()) == {1}
