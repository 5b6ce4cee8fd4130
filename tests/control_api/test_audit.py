"""The audit log is hash-chained: an edited, removed or reordered entry is found, and
reviewers can ask who could do what on a node."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import grpc
import pytest

from protos import control_pb2, topology_pb2

from .conftest import Running, start_orchestrator, stop_orchestrator


def _apply_some(r: Running, n: int = 3) -> None:
    stub = r.control()
    for i in range(n):
        stub.Apply(
            control_pb2.ApplyRequest(
                app=topology_pb2.Application(
                    name=f"app{i}",
                    services=[
                        topology_pb2.Service(name="web", image="local/busybox:1", replicas=1)
                    ],
                )
            )
        )


def _tamper(root: Path, edit: str) -> None:
    """Change the store file by hand, the orchestrator stopped (what an intruder with
    the disk would do)."""
    db = sqlite3.connect(root / "store.db")
    rows = db.execute("SELECT key, value FROM kv WHERE key LIKE '/audit/%' ORDER BY key").fetchall()
    key, value = rows[2]
    if edit == "edit":
        entry = json.loads(value)
        entry["by"] = "spiffe://orch.test/user/someone-else"
        new = json.dumps(entry, sort_keys=True, separators=(",", ":")).encode()
        db.execute("UPDATE kv SET value = ? WHERE key = ?", (new, key))
    elif edit == "remove":
        db.execute("DELETE FROM kv WHERE key = ?", (key,))
    elif edit == "reorder":
        other_key, other_value = rows[3]
        db.execute("UPDATE kv SET value = ? WHERE key = ?", (other_value, key))
        db.execute("UPDATE kv SET value = ? WHERE key = ?", (value, other_key))
    elif edit == "truncate":
        db.execute("DELETE FROM kv WHERE key = ?", (rows[-1][0],))
    db.commit()
    db.close()


def test_intact_chain_verifies(orchestrator: Running) -> None:
    _apply_some(orchestrator)
    resp = orchestrator.control().AuditVerify(control_pb2.AuditVerifyRequest())
    assert resp.ok, resp.message


@pytest.mark.parametrize("edit", ["edit", "remove", "reorder", "truncate"])
def test_hand_edited_log_is_caught(tmp_path: Path, edit: str) -> None:
    r = start_orchestrator(tmp_path)
    _apply_some(r)
    stop_orchestrator(r)
    _tamper(tmp_path, edit)
    r = start_orchestrator(tmp_path)
    try:
        resp = r.control().AuditVerify(control_pb2.AuditVerifyRequest())
        assert not resp.ok
        expected = {
            "edit": "entry 2",
            "remove": "entry 2",
            "reorder": "entry 2",
            "truncate": "missing",
        }[edit]
        assert expected in resp.message, resp.message
    finally:
        stop_orchestrator(r)


def test_tail_returns_the_chain_and_tenants_may_not_read_it(orchestrator: Running) -> None:
    _apply_some(orchestrator, 2)
    entries = list(orchestrator.control().AuditTail(control_pb2.AuditRequest()))
    assert [e.seq for e in entries] == list(range(len(entries)))
    assert any(json.loads(e.json)["event"] == "app.applied" for e in entries)
    viewer = orchestrator.control("rita", "viewer")
    assert list(viewer.AuditTail(control_pb2.AuditRequest(limit=1)))
    tenant = orchestrator.control("tina", "tenant:acme")
    with pytest.raises(grpc.RpcError) as err:
        list(tenant.AuditTail(control_pb2.AuditRequest()))
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.RpcError) as err:
        tenant.AuditVerify(control_pb2.AuditVerifyRequest())
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_follow_from_past_the_end_does_not_replay_the_log(orchestrator: Running) -> None:
    """`capstan events -w` follows from one past the last entry it printed: with no new
    entry yet, the stream must wait for the next one, not replay the log from 0 (it did,
    and a busy cluster's whole history then poured into the follower)."""
    _apply_some(orchestrator, 2)
    stub = orchestrator.control()
    head = list(stub.AuditTail(control_pb2.AuditRequest()))[-1].seq
    call = stub.AuditTail(control_pb2.AuditRequest(since=head + 1, follow=True))
    try:
        stub.Apply(
            control_pb2.ApplyRequest(
                app=topology_pb2.Application(
                    name="later",
                    services=[
                        topology_pb2.Service(name="web", image="local/busybox:1", replicas=1)
                    ],
                )
            )
        )
        first = next(call)
    finally:
        call.cancel()
    assert first.seq > head
