"""NodeState: the agent's durable record of what it created."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from node.errors import AlreadyExists, FailedPrecondition, NotFound
from node.runtime.base import ContainerSpec, VolumeMount
from node.state import NodeState, spec_from_json, spec_to_json
from tests.waiting import FakeClock

SPEC = ContainerSpec(
    name="web-1",
    workload_id="acme/shop/web",
    image="local/busybox:1",
    command=("httpd", "-f", "-p", "8080"),
    env=(("A", "1"), ("B", "x=y")),
    cpu=0.25,
    memory=64 << 20,
    volumes=(VolumeMount("data", "/data"), VolumeMount("conf", "/etc/app", read_only=True)),
    network="host",
    labels=(("tier", "front"),),
)


def test_spec_round_trips_through_json() -> None:
    assert spec_from_json(spec_to_json(SPEC)) == SPEC


def test_records_survive_reopening(tmp_path: Path) -> None:
    clock = FakeClock(1000.0)
    db = tmp_path / "state.db"
    state = NodeState(db, clock=clock)
    rec = state.record_created(SPEC, "proc-1", 4)
    assert (rec.desired, rec.created_at, rec.started_at, rec.pid) == ("created", 1000.0, None, None)
    clock.now = 1010.0
    state.record_started("web-1", pid=4242, start_ticks=99)
    clock.now = 1020.0
    state.record_exited("web-1", 3, at=1020.0)
    state.close()

    again = NodeState(db, clock=clock)
    rec = again.get("web-1")
    assert rec.spec == SPEC
    assert (rec.runtime_id, rec.generation, rec.desired) == ("proc-1", 4, "running")
    assert (rec.started_at, rec.finished_at, rec.exit_code) == (1010.0, 1020.0, 3)
    assert (rec.pid, rec.start_ticks) == (4242, 99)
    assert rec.exit_known
    # A new start clears the previous run's end.
    rec = again.record_started("web-1", pid=4243, start_ticks=100)
    assert (rec.finished_at, rec.exit_code, rec.pid) == (None, None, 4243)
    # A stale observer of the previous run (pid 4242) cannot end the current one.
    rec = again.record_exited("web-1", 0, at=1025.0, pid=4242)
    assert (rec.finished_at, rec.pid) == (None, 4243)
    rec = again.record_exited("web-1", None, at=1030.0, pid=4243)
    assert not rec.exit_known
    again.close()


def test_wal_mode(tmp_path: Path) -> None:
    state = NodeState(tmp_path / "state.db")
    state.close()
    with sqlite3.connect(tmp_path / "state.db") as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    raw.close()


def test_refusals(tmp_path: Path) -> None:
    state = NodeState(tmp_path / "state.db")
    state.record_created(SPEC, "docker-abc", 1)
    with pytest.raises(AlreadyExists):
        state.record_created(SPEC, "docker-def", 2)
    assert state.get("web-1").runtime_id == "docker-abc"
    for call in (
        lambda: state.get("nope"),
        lambda: state.record_started("nope"),
        lambda: state.record_exited("nope", 0, 1.0),
        lambda: state.record_removed("nope"),
        lambda: state.set_desired("nope", "stopped"),
    ):
        with pytest.raises(NotFound):
            call()
    with pytest.raises(ValueError, match="desired"):
        state.set_desired("web-1", "paused")
    assert state.find("nope") is None
    assert [r.name for r in state.all()] == ["web-1"]
    state.close()


def test_remove_and_runtime_id_without_pid(tmp_path: Path) -> None:
    # The docker runtime records container ids and no pid at all.
    state = NodeState(tmp_path / "state.db")
    state.record_created(SPEC, "", 1)
    state.set_runtime_id("web-1", "0123abcd")
    state.record_started("web-1")
    rec = state.get("web-1")
    assert (rec.runtime_id, rec.pid, rec.start_ticks, rec.desired) == (
        "0123abcd",
        None,
        None,
        "running",
    )
    state.set_desired("web-1", "stopped")
    assert state.get("web-1").desired == "stopped"
    state.record_removed("web-1")
    assert state.all() == []
    state.record_created(SPEC, "again", 2)  # the name is free again
    assert state.get("web-1").generation == 2
    state.close()


def test_claim_node(tmp_path: Path) -> None:
    state = NodeState(tmp_path / "state.db")
    state.claim_node("node-1")
    state.claim_node("node-1")
    with pytest.raises(FailedPrecondition, match="belongs to node 'node-1'"):
        state.claim_node("node-2")
    state.close()
