"""The reconcile core: what to do to bring a node's containers to a desired set.

``plan`` is a pure function of the desired set and the containers a runtime lists, so
the same rules drive a node in pull mode (``node.puller``) and can drive the
orchestrator's push reconciler: both decide with this one table, and only the way the
actions are carried out differs (local runtime calls, or token-bearing RPCs).

Rules, one decision per container name:

- desired running, missing: Create, then Start;
- desired running, created: Start;
- desired running, exited or dead: Start again by the restart policy (``always``;
  ``on-failure`` only after a non-zero or unknown exit code; ``never`` leaves it);
- desired running, running: nothing;
- desired removed, or not in the desired set at all (an old version, a workload
  moved or deleted): Remove;
- a container of the desired name that belongs to another workload: Remove, Create,
  Start (names are unique on a node, so the desired workload needs the name).

Removes come first (they free resources the creates may need), then each desired
container in name order. No container gets the same action twice.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from node.runtime.base import ContainerSpec, ContainerState, ContainerStatus

__all__ = [
    "DESIRED_STATES",
    "RESTART_POLICIES",
    "Action",
    "Create",
    "Desired",
    "Nothing",
    "Remove",
    "Start",
    "plan",
    "should_restart",
]

DESIRED_STATES = ("running", "removed")
RESTART_POLICIES = ("always", "on-failure", "never")


@dataclass(frozen=True)
class Desired:
    """One container a node should (or should no longer) run."""

    workload_id: str
    spec: ContainerSpec
    desired: str = "running"  # running | removed
    restart: str = "always"  # always | on-failure | never

    def __post_init__(self) -> None:
        if self.desired not in DESIRED_STATES:
            raise ValueError(f"desired must be one of {DESIRED_STATES}, got {self.desired!r}")
        if self.restart not in RESTART_POLICIES:
            raise ValueError(f"restart must be one of {RESTART_POLICIES}, got {self.restart!r}")

    @property
    def name(self) -> str:
        return self.spec.name


@dataclass(frozen=True)
class Create:
    spec: ContainerSpec
    workload_id: str

    @property
    def name(self) -> str:
        return self.spec.name


@dataclass(frozen=True)
class Start:
    name: str
    workload_id: str
    # True when the container ran before and exited (the restart policy said so);
    # ``exit_code`` is its last one, None when unknown.
    restart: bool = False
    exit_code: int | None = None


@dataclass(frozen=True)
class Remove:
    name: str
    workload_id: str
    why: str  # removed | not-desired | replaced


@dataclass(frozen=True)
class Nothing:
    """A container deliberately left as it is, and why (running, policy, unknown state)."""

    name: str
    workload_id: str
    why: str


Action = Create | Start | Remove | Nothing


def should_restart(restart: str, exit_code: int | None) -> bool:
    """Whether an exited container is started again under policy ``restart``."""
    if restart == "always":
        return True
    if restart == "on-failure":
        return exit_code is None or exit_code != 0
    return False


def plan(desired: Iterable[Desired], actual: Iterable[ContainerStatus]) -> list[Action]:
    """The actions that bring ``actual`` to ``desired``; see the module docstring."""
    wanted: dict[str, Desired] = {}
    for d in desired:
        # The first entry for a name wins: a second one cannot also be satisfied.
        wanted.setdefault(d.name, d)
    present: dict[str, ContainerStatus] = {}
    for status in actual:
        present.setdefault(status.name, status)

    removes: list[Action] = []
    rest: list[Action] = []
    for name in sorted(present):
        have = present[name]
        want = wanted.get(name)
        if want is None:
            removes.append(Remove(name, have.workload_id, "not-desired"))
        elif want.desired == "removed":
            removes.append(Remove(name, have.workload_id, "removed"))
        elif have.workload_id != want.workload_id:
            removes.append(Remove(name, have.workload_id, "replaced"))

    for name in sorted(wanted):
        d = wanted[name]
        if d.desired != "running":
            continue
        c = present.get(name)
        if c is None or c.workload_id != d.workload_id:
            rest.append(Create(d.spec, d.workload_id))
            rest.append(Start(name, d.workload_id))
        elif c.state is ContainerState.CREATED:
            rest.append(Start(name, d.workload_id))
        elif c.state in (ContainerState.EXITED, ContainerState.DEAD):
            if should_restart(d.restart, c.exit_code):
                rest.append(Start(name, d.workload_id, restart=True, exit_code=c.exit_code))
            else:
                why = "completed" if c.exit_code == 0 else "failed"
                rest.append(Nothing(name, d.workload_id, f"{why}; restart policy {d.restart}"))
        elif c.state is ContainerState.RUNNING:
            rest.append(Nothing(name, d.workload_id, "running"))
        else:
            rest.append(Nothing(name, d.workload_id, f"state {c.state}"))
    return removes + rest
