"""Leases on an injected clock: suspect after a missed heartbeat, dead after the grace,
evaluated by the timer even when no report arrives; heartbeats write nothing."""

from __future__ import annotations

import asyncio
from pathlib import Path

from orchestrator.failover import LivenessWatch
from protos import gateway_pb2
from tests.failover._local import local


def test_silent_node_is_suspect_then_dead_on_the_timer_alone(tmp_path: Path) -> None:
    async def main() -> None:
        lo = await local(tmp_path, heartbeat=1.0, grace=3.0)
        await lo.add_node("n1")
        watch = LivenessWatch(lo.reconciler)
        assert watch.period <= 0.25  # several evaluations per heartbeat
        lo.tracker.seen("n1", gateway_pb2.NodeStatus(full=True))
        assert await watch.check() == {}
        lo.clock.advance(1.9)  # one lease missed: suspect, which moves nothing
        assert lo.tracker.liveness("n1").value == "suspect"
        assert await watch.check() == {}
        assert lo.state.node("n1").state == "ready"  # type: ignore[union-attr]
        lo.clock.advance(1.0)  # 2.9 s: still within the grace
        assert await watch.check() == {}
        lo.clock.advance(0.2)  # 3.1 s of silence, and no report arrived to trigger anything
        assert await watch.check() == {"n1": ("ready", "dead")}
        assert [e["node"] for e in await lo.events("node.dead")] == ["n1"]
        # A heartbeat brings it back at the next evaluation.
        lo.tracker.seen("n1", gateway_pb2.NodeStatus(full=True))
        assert await watch.check() == {"n1": ("dead", "ready")}
        assert [e["node"] for e in await lo.events("node.back")] == ["n1"]
        await lo.store.close()

    asyncio.run(main())


def test_heartbeats_of_a_live_node_write_nothing(tmp_path: Path) -> None:
    async def main() -> None:
        lo = await local(tmp_path, heartbeat=1.0, grace=3.0)
        await lo.add_node("n1")
        watch = LivenessWatch(lo.reconciler)
        revision = lo.state.nodes["n1"].revision
        for _ in range(100):  # 100 s of heartbeats, a little late each time
            lo.clock.advance(1.05)
            lo.tracker.seen("n1", gateway_pb2.NodeStatus(full=True))
            assert await watch.check() == {}
        assert lo.state.nodes["n1"].revision == revision
        await lo.store.close()

    asyncio.run(main())


def test_time_the_orchestrator_could_not_listen_is_not_a_nodes_silence(tmp_path: Path) -> None:
    """A stalled orchestrator (its loop busy, reports queued unread) must not declare
    every node dead when it wakes up; a node silent while it listened still dies."""

    async def main() -> None:
        lo = await local(tmp_path, heartbeat=1.0, grace=3.0)
        await lo.add_node("n1")
        watch = LivenessWatch(lo.reconciler)
        lo.tracker.seen("n1", gateway_pb2.NodeStatus(full=True))
        lo.clock.advance(5.0)
        lo.tracker.stalled(4.5)  # of those 5 s, the orchestrator heard nothing for 4.5
        assert await watch.check() == {}
        assert lo.tracker.liveness("n1").value == "ready"
        lo.clock.advance(2.8)  # 3.3 s of silence it could have heard: dead
        assert await watch.check() == {"n1": ("ready", "dead")}
        # A report taken in after the stall starts a fresh count.
        lo.tracker.seen("n1", gateway_pb2.NodeStatus(full=True))
        assert await watch.check() == {"n1": ("dead", "ready")}
        lo.clock.advance(3.1)
        assert await watch.check() == {"n1": ("ready", "dead")}
        await lo.store.close()

    asyncio.run(main())


def test_every_node_silent_at_once_is_the_orchestrators_own_deafness(tmp_path: Path) -> None:
    """One node silent while the others report is that node's silence; every node
    silent at once, longer than chance allows, is the orchestrator not hearing (its
    gRPC reads stalled): Tracker.quiet, which the watch counts as deafness."""

    async def main() -> None:
        lo = await local(tmp_path, heartbeat=1.0, grace=3.0)
        names = ["n1", "n2", "n3", "n4"]
        for name in names:
            await lo.add_node(name)
            lo.tracker.seen(name, gateway_pb2.NodeStatus(full=True))
        watch = LivenessWatch(lo.reconciler)
        for _ in range(4):  # n1 silent, the others report every 0.9 s
            lo.clock.advance(0.9)
            for name in names[1:]:
                lo.tracker.seen(name, gateway_pb2.NodeStatus(full=True))
            assert lo.tracker.quiet() == 0.0
        assert await watch.check() == {"n1": ("ready", "dead")}
        # Now nobody: three heartbeats shared among the three heard (1 s) is chance,
        # more is the orchestrator's own deafness.
        lo.clock.advance(0.9)
        assert lo.tracker.quiet() == 0.0
        lo.clock.advance(0.6)
        assert abs(lo.tracker.quiet() - 1.5) < 1e-6
        await lo.store.close()

    asyncio.run(main())
