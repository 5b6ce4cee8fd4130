"""The autoscaler on an injected clock: immediate scale-up within max and capacity, scale
down only after a whole window below the target, decisions audited with their reason,
the count kept in the AppRecord and across re-applies."""

from __future__ import annotations

import asyncio
from pathlib import Path

from orchestrator import apply as plans
from orchestrator.autoscale import Autoscaler, AutoscaleSettings, keep_autoscaled, recommend
from protos import control_pb2, gateway_pb2, topology_pb2
from tests.failover._local import Local, local

IMAGE = "local/busybox:1"
SETTINGS = AutoscaleSettings(interval=1.0, window=30.0, tolerance=0.1)


def _app(maximum: int = 4, replicas: int = 1) -> topology_pb2.Application:
    return topology_pb2.Application(
        name="burn",
        tenant="default",
        services=[
            topology_pb2.Service(
                name="cpu",
                image=IMAGE,
                replicas=replicas,
                resources=topology_pb2.Resources(cpu=0.5),
                autoscale=topology_pb2.Autoscale(min=1, max=maximum, target_cpu=0.5),
            )
        ],
    )


async def _deploy(lo: Local, app: topology_pb2.Application) -> None:
    record, _, writes = plans.plan(app, None, [], now=lo.clock())
    await lo.state.commit(apps=[record], workloads=writes)


async def _run_all(lo: Local, cores: float) -> None:
    """Every wanted instance runs on n1 and used ``cores`` CPU in the last report."""
    usage = []
    for w in lo.state.all_workloads():
        if w.desired != "running":
            continue
        w.node, w.container, w.state = "n1", plans.container_name(w), "running"
        await lo.state.save_workload(w)
        usage.append(gateway_pb2.ContainerUsage(name=w.container, cpu_fraction=cores))
    lo.tracker.seen("n1", gateway_pb2.NodeStatus(full=False, usage=usage))


def _replicas(lo: Local) -> int:
    rec = lo.state.app("default", "burn")
    assert rec is not None
    return plans.replicas_of(rec.app.services[0])


def _wanted(lo: Local) -> int:
    return sum(1 for w in lo.state.all_workloads() if w.desired == "running")


def test_recommend() -> None:
    spec = topology_pb2.Autoscale(min=1, max=10, target_cpu=0.5)
    assert recommend(2, [0.5, 0.5], 0.5, spec, 0.1) == (4, 1.0)  # 100% of request vs 50%
    assert recommend(4, [0.26, 0.24], 0.5, spec, 0.1) == (4, 0.5)  # on target
    assert recommend(4, [0.0], 0.5, spec, 0.1)[0] == 1  # idle: down to min
    assert recommend(4, [5.0], 0.5, spec, 0.1)[0] == 10  # capped at max


def test_scales_up_at_once_and_records_why(tmp_path: Path) -> None:
    async def main() -> None:
        lo = await local(tmp_path)
        await lo.add_node("n1", cpus=8.0)
        await _deploy(lo, _app(maximum=4))
        await _run_all(lo, cores=1.0)
        scaler = Autoscaler(lo.reconciler, lo.audit, settings=SETTINGS, clock=lo.clock)
        [d] = await scaler.evaluate()
        assert (d.replicas_from, d.replicas_to) == (1, 4)
        assert _replicas(lo) == 4 and _wanted(lo) == 4
        assert dict(lo.state.app("default", "burn").autoscaled) == {"cpu": 4}  # type: ignore[union-attr]
        [event] = await lo.events("autoscale")
        assert event["replicas_to"] == 4 and event["service"] == "cpu"
        assert "cpu 200% of 0.5 cores requested over 1 instance(s), target 50%" in str(event["why"])
        await lo.store.close()

    asyncio.run(main())


def test_scale_up_stops_at_capacity(tmp_path: Path) -> None:
    async def main() -> None:
        lo = await local(tmp_path)
        await lo.add_node("n1", cpus=1.0)  # room for two instances of 0.5 cores
        await _deploy(lo, _app(maximum=8))
        await _run_all(lo, cores=1.0)
        scaler = Autoscaler(lo.reconciler, lo.audit, settings=SETTINGS, clock=lo.clock)
        [d] = await scaler.evaluate()
        assert (d.replicas_from, d.replicas_to) == (1, 2)
        assert d.why.endswith("capacity for 1 more")
        await _run_all(lo, cores=1.0)
        assert await scaler.evaluate() == []  # full: no decision, no churn
        assert _replicas(lo) == 2
        await lo.store.close()

    asyncio.run(main())


def test_scale_down_waits_for_a_whole_window_below_target(tmp_path: Path) -> None:
    async def main() -> None:
        lo = await local(tmp_path)
        await lo.add_node("n1", cpus=8.0)
        await _deploy(lo, _app(maximum=4, replicas=4))
        scaler = Autoscaler(lo.reconciler, lo.audit, settings=SETTINGS, clock=lo.clock)
        await _run_all(lo, cores=0.0)
        for _ in range(29):  # idle for 29 s: nothing yet
            assert await scaler.evaluate() == []
            lo.clock.advance(1.0)
        await _run_all(lo, cores=0.25)  # back on target for a moment: the window restarts
        assert await scaler.evaluate() == []
        await _run_all(lo, cores=0.1)  # 20% of the request: wants 2
        assert await scaler.evaluate() == []
        lo.clock.advance(10.0)
        await _run_all(lo, cores=0.0)  # idle: wants 1, but 2 was wanted within the window
        assert await scaler.evaluate() == []
        lo.clock.advance(20.0)
        [d] = await scaler.evaluate()
        assert (d.replicas_from, d.replicas_to) == (4, 2)
        assert _wanted(lo) == 2
        assert [w.index for w in lo.state.all_workloads() if w.desired == "removed"] == [2, 3]
        assert d.why.endswith("below target for 30s")
        await lo.store.close()

    asyncio.run(main())


def test_no_measurement_no_decision(tmp_path: Path) -> None:
    async def main() -> None:
        lo = await local(tmp_path)
        await lo.add_node("n1", cpus=8.0)
        await _deploy(lo, _app(maximum=4, replicas=3))
        scaler = Autoscaler(lo.reconciler, lo.audit, settings=SETTINGS, clock=lo.clock)
        for _ in range(100):
            assert await scaler.evaluate() == []
            lo.clock.advance(1.0)
        assert _replicas(lo) == 3
        await lo.store.close()

    asyncio.run(main())


def test_reapply_keeps_the_autoscaled_count_within_the_new_bounds() -> None:
    record = control_pb2.AppRecord()
    record.app.CopyFrom(_app())
    record.autoscaled["cpu"] = 4
    again = _app(maximum=4)
    assert keep_autoscaled(again, record) == {"cpu": 4}
    assert again.services[0].replicas == 4
    narrower = _app(maximum=3)
    assert keep_autoscaled(narrower, record) == {"cpu": 3}
    assert narrower.services[0].replicas == 3
    plain = _app()
    plain.services[0].ClearField("autoscale")
    assert keep_autoscaled(plain, record) == {}
    assert plain.services[0].replicas == 1


def test_scale_up_stops_at_the_tenants_quota_with_an_event(tmp_path: Path) -> None:
    async def main() -> None:
        lo = await local(tmp_path)
        await lo.add_node("n1", cpus=8.0)  # capacity for many: the quota is what binds
        await lo.reconciler.policies.set_quota(control_pb2.Quota(tenant="default", instances=3))
        await _deploy(lo, _app(maximum=8))
        await _run_all(lo, cores=2.0)  # wants 8
        scaler = Autoscaler(lo.reconciler, lo.audit, settings=SETTINGS, clock=lo.clock)
        [d] = await scaler.evaluate()
        assert (d.replicas_from, d.replicas_to) == (1, 3)
        assert d.why.endswith("capped by the quota of tenant default")
        [capped] = await lo.events("autoscale.capped")
        assert (capped["replicas"], capped["wanted"], capped["allowed"]) == (1, 8, 3)
        await _run_all(lo, cores=2.0)
        assert await scaler.evaluate() == []  # at the quota: no decision
        assert _replicas(lo) == 3 and _wanted(lo) == 3
        assert len(await lo.events("autoscale.capped")) == 2  # the new cap: 3 wants 8
        await lo.store.close()

    asyncio.run(main())
