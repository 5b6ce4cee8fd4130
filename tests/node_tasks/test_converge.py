"""The reconcile core: one decision per container, by the rules in node/converge.py."""

from __future__ import annotations

import pytest

from node.converge import Create, Desired, Nothing, Remove, Start, plan, should_restart
from node.runtime.base import ContainerSpec, ContainerState, ContainerStatus

IMAGE = "local/busybox:1"


def spec(name: str, workload: str | None = None) -> ContainerSpec:
    return ContainerSpec(name=name, workload_id=workload or f"t.app.{name}", image=IMAGE)


def want(name: str, *, desired: str = "running", restart: str = "always") -> Desired:
    s = spec(name)
    return Desired(s.workload_id, s, desired, restart)


def have(
    name: str, state: ContainerState, exit_code: int | None = None, workload: str | None = None
) -> ContainerStatus:
    return ContainerStatus(
        name=name,
        workload_id=workload or f"t.app.{name}",
        image=IMAGE,
        state=state,
        exit_code=exit_code,
    )


def test_missing_is_created_then_started() -> None:
    d = want("a")
    assert plan([d], []) == [Create(d.spec, d.workload_id), Start("a", d.workload_id)]


def test_created_is_started_and_running_is_left_alone() -> None:
    a, b = want("a"), want("b")
    actions = plan([a, b], [have("a", ContainerState.CREATED), have("b", ContainerState.RUNNING)])
    assert actions == [Start("a", a.workload_id), Nothing("b", b.workload_id, "running")]


@pytest.mark.parametrize(
    ("restart", "exit_code", "restarted"),
    [
        ("always", 0, True),
        ("always", 3, True),
        ("on-failure", 3, True),
        ("on-failure", None, True),  # unknown exit (dead): counts as a failure
        ("on-failure", 0, False),
        ("never", 3, False),
        ("never", None, False),
    ],
)
def test_exited_follows_the_restart_policy(
    restart: str, exit_code: int | None, restarted: bool
) -> None:
    d = want("a", restart=restart)
    state = ContainerState.DEAD if exit_code is None else ContainerState.EXITED
    actions = plan([d], [have("a", state, exit_code)])
    assert should_restart(restart, exit_code) is restarted
    if restarted:
        assert actions == [Start("a", d.workload_id, restart=True, exit_code=exit_code)]
    else:
        assert len(actions) == 1 and isinstance(actions[0], Nothing)
        assert f"restart policy {restart}" in actions[0].why


def test_removed_and_undesired_containers_are_removed_first() -> None:
    keep, gone = want("keep"), want("gone", desired="removed")
    actions = plan(
        [keep, gone],
        [
            have("gone", ContainerState.RUNNING),
            have("stray", ContainerState.EXITED, 0, workload="t.app.old"),
            have("keep.v1", ContainerState.RUNNING, workload=keep.workload_id),  # old version
        ],
    )
    assert actions == [
        Remove("gone", gone.workload_id, "removed"),
        Remove("keep.v1", keep.workload_id, "not-desired"),
        Remove("stray", "t.app.old", "not-desired"),
        Create(keep.spec, keep.workload_id),
        Start("keep", keep.workload_id),
    ]


def test_desired_removed_and_absent_needs_nothing() -> None:
    assert plan([want("a", desired="removed")], []) == []


def test_a_name_held_by_another_workload_is_replaced() -> None:
    d = want("a")
    actions = plan([d], [have("a", ContainerState.RUNNING, workload="t.app.intruder")])
    assert actions == [
        Remove("a", "t.app.intruder", "replaced"),
        Create(d.spec, d.workload_id),
        Start("a", d.workload_id),
    ]


def test_nothing_twice_even_with_repeated_entries() -> None:
    first = want("a")
    second = Desired("t.app.other", spec("a", "t.app.other"))
    actions = plan([first, second, first], [have("x", ContainerState.RUNNING)] * 2)
    assert actions == [
        Remove("x", "t.app.x", "not-desired"),
        Create(first.spec, first.workload_id),
        Start("a", first.workload_id),
    ]
    kinds = [(type(a).__name__, a.name) for a in actions]
    assert len(kinds) == len(set(kinds))


def test_unknown_state_is_left_alone() -> None:
    d = want("a")
    assert plan([d], [have("a", ContainerState.UNKNOWN)]) == [
        Nothing("a", d.workload_id, "state unknown")
    ]


def test_bad_desired_values_are_refused() -> None:
    with pytest.raises(ValueError, match="desired"):
        Desired("w", spec("a"), "paused")
    with pytest.raises(ValueError, match="restart"):
        Desired("w", spec("a"), "running", "sometimes")
