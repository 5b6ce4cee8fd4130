"""The task runner on a real joined node: volume fetches through a real delegation, and
the tasks it must refuse without calling anyone."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from node.runtime.process import ProcessRuntime
from node.tasks import TaskRunner
from node.volumes import VolumeStore
from protos import gateway_pb2
from protos.wire.channel import client_credentials
from tests.node_process.conftest import kill_recorded
from tests.waiting import wait_for

from .conftest import Cluster


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A real socket standing where a source would be: it must never see a connection."""
    sock = socket.create_server(("127.0.0.9", 0))
    sock.setblocking(False)
    try:
        yield sock
    finally:
        sock.close()


def no_connection(sock: socket.socket) -> bool:
    try:
        conn, _ = sock.accept()
    except BlockingIOError:
        return True
    conn.close()
    return False


def fetch(request_id: str, *, address: str, **fields: object) -> gateway_pb2.Task:
    task = gateway_pb2.Task(
        request_id=request_id,
        kind="image.fetch",
        resource="local/busybox:1",
        source_address=address,
        source_id="spiffe://orch.test/node/elsewhere",
        token="not-a-real-token",
        expires_at=time.time() + 60,
    )
    for name, value in fields.items():
        setattr(task, name, value)
    return task


def test_volume_fetch_through_a_real_delegation(cluster: Cluster) -> None:
    n1 = cluster.join("node-1", "127.0.0.2")
    n2 = cluster.join("node-2", "127.0.0.3")
    cluster.wait_ready("node-1", "node-2")
    src = VolumeStore.for_state_dir(n1.state_dir).create("shop.data")
    (src / "orders").mkdir()
    (src / "orders" / "1.json").write_text('{"total": 42}')
    state = cluster.orch.orch.state
    delegator = cluster.orch.orch.reconciler.delegator
    assert delegator is not None
    record = cluster.orch.run(
        delegator.fetch(
            kind="volume.fetch",
            resource="shop.data",
            workload="default.shop.db.0",
            target=state.node("node-2"),  # type: ignore[arg-type]
            source=state.node("node-1"),  # type: ignore[arg-type]
        )
    )
    wait_for(lambda: len(n2.node.tasks.outcomes) == 1, what="the volume fetch")
    outcome = n2.node.tasks.outcomes[0]
    assert outcome.ok and outcome.completed, outcome.message
    assert outcome.request_id == record.request_id  # type: ignore[attr-defined]
    copied = n2.state_dir / "volumes" / "shop.data" / "orders" / "1.json"
    assert copied.read_text() == '{"total": 42}'
    done = [e for e in cluster.audit() if e["event"] == "task.completed"]
    assert [(e["node"], e["kind"], e["res"], e["ok"]) for e in done] == [
        ("node-2", "volume.fetch", "shop.data", True)
    ]


def test_refused_tasks_call_no_source_and_complete_as_failed_once(
    cluster: Cluster, listener: socket.socket
) -> None:
    n = cluster.join("node-1", "127.0.0.2")
    cluster.wait_ready("node-1")
    address = f"127.0.0.9:{listener.getsockname()[1]}"
    expired = fetch("a" * 32, address=address, expires_at=time.time() - 1)
    tasks = [
        expired,
        fetch("b" * 32, address=address, kind="image.delete"),
        fetch("c" * 32, address=address, token=""),
        fetch("d" * 32, address=address, source_id=n.node_id),
        expired,  # the same request id again: ignored
    ]
    n.node.tasks.submit(tasks)
    wait_for(lambda: len(n.node.tasks.outcomes) == 4, what="four outcomes")
    assert n.node.tasks.ignored == 1
    by_id = {o.request_id[0]: o for o in n.node.tasks.outcomes}
    assert not any(o.ok for o in by_id.values())
    assert "expired" in by_id["a"].message
    assert "unknown task kind 'image.delete'" in by_id["b"].message
    assert by_id["c"].message == "token: missing"
    assert "does not fetch from itself" in by_id["d"].message
    assert no_connection(listener)
    # Each was reported once; the orchestrator never issued these ids and refused them,
    # and a refusal is not retried.
    assert not any(o.completed for o in by_id.values())
    refused = [e["request_id"] for e in cluster.audit() if e["event"] == "complete.refused"]
    assert sorted(refused) == [c * 32 for c in "abcd"]
    assert all("not-a-real-token" not in o.message for o in by_id.values())


def test_completion_is_retried_while_the_gateway_is_unreachable(
    tmp_path: Path, listener: socket.socket
) -> None:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        dead = f"127.0.0.1:{probe.getsockname()[1]}"  # closed once the block ends
    channels: list[str] = []

    def gateway() -> grpc.Channel:
        channels.append(dead)
        return grpc.insecure_channel(dead)

    runtime = ProcessRuntime("spiffe://orch.test/node/lonely", tmp_path / "state")
    runner = TaskRunner(
        runtime,
        VolumeStore.for_state_dir(tmp_path / "state"),
        own_credentials=lambda: client_credentials(b"", b"", b""),
        gateway_channel=gateway,
        node_id=runtime.node_id,
        spool_dir=tmp_path / "spool",
        complete_attempts=3,
        retry_delay=0.01,
    )
    try:
        address = f"127.0.0.9:{listener.getsockname()[1]}"
        runner.submit([fetch("e" * 32, address=address, expires_at=time.time() - 1)])
        wait_for(lambda: len(runner.outcomes) == 1, what="the outcome")
        assert len(channels) == 3
        assert not runner.outcomes[0].ok and not runner.outcomes[0].completed
        assert no_connection(listener)
    finally:
        runner.stop()
        kill_recorded(tmp_path / "state")
        runtime.close()
