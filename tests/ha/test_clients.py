"""Clients of an HA control plane: a context naming every orchestrator, a command that
meets a dead leader or a follower, and the control plane's own view."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from orchestrator._cli.get import format_orchestrators
from orchestrator.client import ControlClient
from orchestrator.context import Context
from protos.control_pb2 import ListAppsRequest, ListNodesRequest
from protos.gateway_pb2 import WatchRequest
from protos.wire.leader import LEADER_METADATA, leader_of
from tests.waiting import wait_for

from ._cluster import HACluster, settled, sleeper_app

pytestmark = [pytest.mark.etcd, pytest.mark.slow]


def context(ha: HACluster, endpoints: list[str]) -> Context:
    issued = ha.authority.issue("user", "admin", role="admin")
    assert issued.key_pem is not None
    files = {"ca": ha.authority.trust_bundle(), "cert": issued.chain_pem, "key": issued.key_pem}
    for what, data in files.items():
        (ha.root / f"admin.{what}").write_bytes(data)
    return Context(
        "ha",
        ",".join(endpoints),
        ha.root / "admin.ca",
        ha.root / "admin.cert",
        Path(ha.root / "admin.key"),
    )


def test_a_command_survives_the_death_of_the_leader(ha: HACluster) -> None:
    old = ha.wait_leader()
    # The dead leader first: the client must move on by itself.
    order = [old.address] + [o.listen for o in ha.orchestrators if o.listen != old.address]
    with ControlClient(context(ha, order), timeout=10) as client:
        assert client.list_apps() == []
        ha.by_address(old.address).kill9()
        reply = client.apply(sleeper_app("after", 2))  # no user action in between
        assert reply is not None
        assert client.endpoints.current() != old.address
        names = {w.id for w in client.list_workloads(app="after")}
    assert len(names) == 2
    settled(ha, names, timeout=60)


def test_a_follower_sends_the_client_to_the_leader(ha: HACluster) -> None:
    leader = ha.wait_leader()
    follower = next(o.listen for o in ha.orchestrators if o.listen != leader.address)
    with ControlClient(context(ha, [follower]), timeout=10) as client:
        client.apply(sleeper_app("redirected", 1))
        assert client.endpoints.current() == leader.address


def test_get_orchestrators_shows_leader_epoch_followers_and_etcd_health(ha: HACluster) -> None:
    leader = ha.wait_leader()
    follower = next(o for o in ha.orchestrators if o.listen != leader.address)
    ha.etcd[2].kill()
    with ControlClient(context(ha, [follower.listen]), timeout=10) as client:
        info = client.list_orchestrators()  # answered by a follower itself
    assert info.answered_by == follower.member
    assert (info.store, info.epoch, info.leader_address) == ("etcd", leader.epoch, leader.address)
    roles = {m.member: m.leader for m in info.members}
    assert roles == {o.member: o.listen == leader.address for o in ha.orchestrators}
    health = {e.name: e.healthy for e in info.etcd}
    assert health == {"etcd-1": True, "etcd-2": True, "etcd-3": False}
    assert sum(e.leader for e in info.etcd) == 1
    text = format_orchestrators(info)
    assert f"leader: {leader.identity} at {leader.address}" in text
    assert f"epoch: {leader.epoch}" in text and "UNHEALTHY" in text


def test_a_node_joining_at_a_follower_is_sent_to_the_leader(ha: HACluster) -> None:
    leader = ha.wait_leader()
    follower = next(o for o in ha.orchestrators if o.listen != leader.address)
    agent = ha.join("ha-n3", "127.0.0.73", join_at=follower.join)
    assert "joining through" in agent.log.read_text()
    names = {n.name for n in ha.control(leader.address).ListNodes(ListNodesRequest()).nodes}
    assert "ha-n3" in names


def test_a_follower_does_not_tell_a_revoked_caller_where_the_leader_is(ha: HACluster) -> None:
    leader = ha.wait_leader()
    follower = next(o for o in ha.orchestrators if o.listen != leader.address)
    issued = ha.authority.issue("user", "mallory", role="admin")
    stub = ha.stub_for(issued, follower.listen)

    def refusal() -> grpc.RpcError:
        with pytest.raises(grpc.RpcError) as caught:
            stub.ListApps(ListAppsRequest(), timeout=10)
        return caught.value

    # Still valid: sent on, with the leader named (so the test can tell the difference).
    sent = refusal()
    assert sent.code() is grpc.StatusCode.UNAVAILABLE
    assert leader_of(sent) == leader.address

    ha.authority.revoke(issued.serial, "key-compromise")
    last: list[grpc.RpcError] = []

    def refused() -> bool:
        last[:] = [refusal()]
        return last[0].code() is grpc.StatusCode.UNAUTHENTICATED

    wait_for(refused, 20, "the follower to refuse the revoked certificate")
    assert _named_leader(last[0]) == ""
    assert leader.address not in (last[0].details() or "")
    # And the same on NodeGateway's streams.
    watch = ha.gateway_stub_for(issued, follower.listen).Watch(WatchRequest(), timeout=10)
    with pytest.raises(grpc.RpcError) as caught:
        next(iter(watch))
    assert caught.value.code() is grpc.StatusCode.UNAUTHENTICATED
    assert _named_leader(caught.value) == ""


def _named_leader(error: grpc.RpcError) -> str:
    """The leader named in a refusal's trailing metadata, whatever its status."""
    trailing = error.trailing_metadata() or ()
    return next((str(v) for k, v in trailing if k == LEADER_METADATA), "")
