"""The puller's converge pass against a real process runtime, fed assignments directly
(the Watch stream itself is covered end to end in test_pull.py)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from node.authz import EpochFloor
from node.converge import Action
from node.puller import Puller, RestartBackoff
from node.runtime.base import ContainerSpec, ContainerState
from node.runtime.process import ProcessRuntime
from node.volumes import VolumeStore
from protos import gateway_pb2, node_pb2
from tests.node_process.conftest import busybox_rootfs, kill_recorded
from tests.waiting import FakeClock, wait_for

from .conftest import IMAGE

STRAY = ContainerSpec(
    name="stray", workload_id="default.old.web.0", image=IMAGE, command=("sleep", "300")
)


@pytest.fixture
def runtime(tmp_path: Path) -> Iterator[ProcessRuntime]:
    rt = ProcessRuntime("spiffe://t/node/p", tmp_path / "state")
    rt.import_rootfs(IMAGE, [busybox_rootfs()], env=(("PATH", "/bin"),))
    try:
        yield rt
    finally:
        kill_recorded(tmp_path / "state")
        rt.close()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(1_000_000.0)


@pytest.fixture
def puller(runtime: ProcessRuntime, tmp_path: Path, clock: FakeClock) -> Puller:
    # Never started: the test hands it assignments as the Watch stream would.
    return Puller(
        runtime,
        VolumeStore.for_state_dir(tmp_path / "state"),
        gateway_address="127.0.0.1:1",
        cert=tmp_path / "none.crt",
        key=tmp_path / "none.key",
        ca=tmp_path / "none.ca",
        node_name="p",
        interval=1.0,
        clock=clock,
        restart_backoff=RestartBackoff(initial=5.0, maximum=20.0, reset_after=30.0),
    )


def assignment(
    index: int,
    *command: str,
    desired: str = "running",
    restart: str = "always",
    volume: str = "",
    image: str = IMAGE,
) -> gateway_pb2.Assignment:
    wid = f"default.shop.web.{index}"
    spec = node_pb2.ContainerSpec(
        name=f"{wid}.abc",
        workload_id=wid,
        image=image,
        command=list(command or ("sleep", "300")),
        network="none",
        volumes=[node_pb2.VolumeMount(name=volume, path="/data")] if volume else [],
    )
    return gateway_pb2.Assignment(workload_id=wid, spec=spec, desired=desired, restart=restart)


def kinds(actions: list[Action]) -> list[tuple[str, str]]:
    return [(type(a).__name__, a.name) for a in actions]


def state(rt: ProcessRuntime, name: str) -> ContainerState:
    return rt.inspect(name).state


def test_nothing_is_touched_before_the_first_assignments(
    puller: Puller, runtime: ProcessRuntime
) -> None:
    runtime.create(STRAY)
    assert puller.converge_once() == []
    assert [c.name for c in runtime.list()] == ["stray"]


def test_converges_and_a_second_pass_does_nothing(
    puller: Puller, runtime: ProcessRuntime, tmp_path: Path
) -> None:
    runtime.create(STRAY)
    puller.update(
        gateway_pb2.Assignments(
            assignments=[assignment(0), assignment(1, volume="default.shop.data")], revision=1
        )
    )
    done = puller.converge_once()
    assert kinds(done) == [
        ("Remove", "stray"),
        ("Create", "default.shop.web.0.abc"),
        ("Start", "default.shop.web.0.abc"),
        ("Create", "default.shop.web.1.abc"),
        ("Start", "default.shop.web.1.abc"),
    ]
    assert sorted((c.name, c.state) for c in runtime.list()) == [
        ("default.shop.web.0.abc", ContainerState.RUNNING),
        ("default.shop.web.1.abc", ContainerState.RUNNING),
    ]
    assert (tmp_path / "state" / "volumes" / "default.shop.data").is_dir()
    assert puller.converge_once() == []

    # Desired removed: gone; the other one stays.
    puller.update(
        gateway_pb2.Assignments(
            assignments=[assignment(0), assignment(1, desired="removed")], revision=2
        )
    )
    assert kinds(puller.converge_once()) == [("Remove", "default.shop.web.1.abc")]
    assert [c.name for c in runtime.list()] == ["default.shop.web.0.abc"]


def test_a_bad_assignment_is_skipped_and_its_container_left_alone(
    puller: Puller, runtime: ProcessRuntime, caplog: pytest.LogCaptureFixture
) -> None:
    puller.update(gateway_pb2.Assignments(assignments=[assignment(0)]))
    puller.converge_once()
    assert state(runtime, "default.shop.web.0.abc") is ContainerState.RUNNING
    # Version 2 of workload 0 is unusable (a path-like image ref), workload 1 is fine.
    bad = assignment(0, image="../../etc/passwd")
    bad.spec.name = "default.shop.web.0.def"
    mismatched = assignment(2)
    mismatched.workload_id = "default.shop.web.9"  # the spec names another workload
    puller.update(gateway_pb2.Assignments(assignments=[bad, assignment(1), mismatched]))
    with caplog.at_level(logging.ERROR, logger="capstan.node.puller"):
        assert kinds(puller.converge_once()) == [
            ("Create", "default.shop.web.1.abc"),
            ("Start", "default.shop.web.1.abc"),
        ]
        assert puller.converge_once() == []
    skipped = [r.getMessage() for r in caplog.records if "skipping assignment" in r.getMessage()]
    assert len(skipped) == 2  # each logged once, not at every pass
    assert "image" in skipped[0] and "default.shop.web.9" in skipped[1]
    # The running version-1 container of the bad assignment was not removed.
    assert state(runtime, "default.shop.web.0.abc") is ContainerState.RUNNING
    assert not any(c.name.endswith(".def") for c in runtime.list())


def test_restart_policies_and_backoff_on_the_injected_clock(
    puller: Puller, runtime: ProcessRuntime, clock: FakeClock
) -> None:
    crash, done, fails = (
        "default.shop.web.0.abc",
        "default.shop.web.1.abc",
        "default.shop.web.2.abc",
    )
    puller.update(
        gateway_pb2.Assignments(
            assignments=[
                assignment(0, "sh", "-c", "exit 3", restart="always"),
                assignment(1, "true", restart="on-failure"),
                assignment(2, "sh", "-c", "exit 4", restart="never"),
            ]
        )
    )
    puller.converge_once()

    def exited(name: str) -> bool:
        return state(runtime, name) is ContainerState.EXITED

    for name in (crash, done, fails):
        wait_for(lambda n=name: exited(n), what=f"{name} to exit")  # type: ignore[misc]
    # First exit: restarted at once; on-failure after exit 0 and never: left alone.
    assert kinds(puller.converge_once()) == [("Start", crash)]
    wait_for(lambda: exited(crash), what="the second exit")
    # Second exit: not before 5 s on the clock, then once.
    assert puller.converge_once() == []
    clock.now += 4.9
    assert puller.converge_once() == []
    clock.now += 0.2
    assert kinds(puller.converge_once()) == [("Start", crash)]
    wait_for(lambda: exited(crash), what="the third exit")
    clock.now += 5.1
    assert puller.converge_once() == []  # the delay doubled to 10 s
    clock.now += 5.0
    assert kinds(puller.converge_once()) == [("Start", crash)]
    assert runtime.inspect(done).exit_code == 0 and runtime.inspect(fails).exit_code == 4


def test_assignments_from_an_older_epoch_are_refused(
    runtime: ProcessRuntime, tmp_path: Path, clock: FakeClock
) -> None:
    """Regression (pull mode had no epoch check): once a node has seen a newer
    leadership, a deposed leader's view changes nothing on it."""
    floor = EpochFloor()
    puller = Puller(
        runtime,
        VolumeStore.for_state_dir(tmp_path / "state"),
        gateway_address="127.0.0.1:1",
        cert=tmp_path / "n.crt",
        key=tmp_path / "n.key",
        ca=tmp_path / "ca.crt",
        node_name="n1",
        interval=0.05,
        clock=clock,
        epochs=floor,
    )
    new = gateway_pb2.Assignments(assignments=[assignment(0)], epoch=7, revision=40)
    assert puller.update(new)
    assert floor.value == 7, "the epoch seen in a set raises the floor tokens are checked against"
    # The old leader (epoch 6) still holds an older view with workload 0 removed.
    stale = gateway_pb2.Assignments(assignments=[assignment(0, desired="removed")], epoch=6)
    stale.revision = 99
    assert not puller.update(stale)
    # Same epoch, but an older revision: a stream that fell behind.
    behind = gateway_pb2.Assignments(assignments=[], epoch=7, revision=39)
    assert not puller.update(behind)
    assert puller.refused == 2
    assert puller.assignments == new
    puller.converge_once()
    assert state(runtime, "default.shop.web.0.abc") is ContainerState.RUNNING
    # A token of epoch 8 seen by the authorizer also ends epoch 7's sets.
    floor.observe(8)
    assert not puller.update(gateway_pb2.Assignments(assignments=[], epoch=7, revision=41))
    assert puller.update(gateway_pb2.Assignments(assignments=[assignment(0)], epoch=8, revision=2))


def test_pull_assignment_mounting_another_tenants_volume_touches_nothing(
    puller: Puller, runtime: ProcessRuntime, tmp_path: Path
) -> None:
    # Pull mode checks what push mode checks: a container mounts only volumes of its
    # own tenant and application (regression: same-named apps shared volumes).
    puller.update(
        gateway_pb2.Assignments(
            assignments=[assignment(0, volume="globex.shop.data"), assignment(1)], revision=1
        )
    )
    done = puller.converge_once()
    assert kinds(done) == [
        ("Create", "default.shop.web.1.abc"),
        ("Start", "default.shop.web.1.abc"),
    ]
    assert [c.name for c in runtime.list()] == ["default.shop.web.1.abc"]
    assert not (tmp_path / "state" / "volumes" / "globex.shop.data").exists()
