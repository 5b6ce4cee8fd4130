"""High availability with real processes: the leader killed, paused, and etcd members
lost. Each test asserts what the issue asks, with exact statuses."""

from __future__ import annotations

import signal
import threading
import time

import grpc
import pytest

from orchestrator.client import ControlClient
from orchestrator.context import Context
from pki.tokenkeys import TokenKeyStore
from pki.tokens import mint
from protos import control_pb2, control_pb2_grpc, node_pb2, node_pb2_grpc
from protos.wire.channel import client_credentials
from tests.waiting import wait_for

from ._cluster import TD, HACluster, settled, sleeper_app

pytestmark = [pytest.mark.etcd, pytest.mark.slow]


def test_kill9_of_the_leader_during_an_apply_loses_and_duplicates_nothing(ha: HACluster) -> None:
    old = ha.wait_leader()
    ha.control(old.address).Apply(control_pb2.ApplyRequest(app=sleeper_app("shop", 12)), timeout=10)
    ha.by_address(old.address).kill9()  # while its reconciler is placing and creating
    killed = time.monotonic()
    new = ha.wait_leader(above=old.epoch)
    took = time.monotonic() - killed
    assert new.address != old.address and new.epoch > old.epoch
    assert took < 15, f"takeover took {took:.1f}s"
    wanted = ha.workload_ids("shop")
    assert len(wanted) == 12
    running = settled(ha, wanted, timeout=60)
    assert sorted(running) == sorted(wanted), "lost or extra instances"
    assert all(len(nodes) == 1 for nodes in running.values()), f"duplicated: {running}"


def test_a_paused_leader_is_deposed_and_what_it_tries_is_not_written(ha: HACluster) -> None:
    old = ha.wait_leader()
    stub = ha.control(old.address)
    stub.ListApps(control_pb2.ListAppsRequest(), timeout=10)  # connected before the pause
    paused = ha.by_address(old.address)
    paused.signal(signal.SIGSTOP)
    try:
        # Sent while it is paused: the request waits in its socket until SIGCONT.
        answer: list[BaseException | object] = []
        request = control_pb2.ApplyRequest(app=sleeper_app("stale", 2))
        sender = threading.Thread(
            target=lambda: answer.append(_call(lambda: stub.Apply(request, timeout=60)))
        )
        sender.start()
        new = ha.wait_leader(above=old.epoch)
        assert new.address != old.address
    finally:
        paused.signal(signal.SIGCONT)
    sender.join(60)
    (result,) = answer
    assert isinstance(result, grpc.RpcError), f"the deposed leader accepted: {result}"
    assert result.code() == grpc.StatusCode.UNAVAILABLE
    assert "not the leader" in (result.details() or "")
    assert dict(result.trailing_metadata() or ()).get("capstan-leader") == new.address
    apps = ha.control(new.address).ListApps(control_pb2.ListAppsRequest(), timeout=10)
    assert "stale" not in {a.name for a in apps.apps}, "a deposed leader's apply was written"
    # It stays a follower: the leader keeps its epoch.
    assert ha.wait_leader().epoch == new.epoch
    # And the nodes, told by the new leader, refuse what the paused one would mint.
    leader_stub = ha.control(new.address)
    leader_stub.Apply(control_pb2.ApplyRequest(app=sleeper_app("after-pause", 2)), timeout=10)
    running = settled(ha, ha.workload_ids("after-pause"), timeout=60)
    assert_old_epoch_refused(ha, running, leader_stub, old.epoch, new.epoch)


def test_losing_one_etcd_member_of_three_stops_nothing(ha: HACluster) -> None:
    leader = ha.wait_leader()
    # A follower member: etcd holds no election, so nothing may change above it.
    ha.etcd[ha.etcd_leader_index(follower=True)].kill()
    stub = ha.control(leader.address)
    stub.Apply(control_pb2.ApplyRequest(app=sleeper_app("one-down", 3)), timeout=20)
    wanted = ha.workload_ids("one-down")
    settled(ha, wanted, timeout=60)
    assert ha.wait_leader().epoch == leader.epoch, "leadership changed without cause"


def test_losing_etcds_own_leader_stops_nothing_either(ha: HACluster) -> None:
    """etcd elects again (about a second); an orchestrator leader that could not renew
    in time steps down and another is elected: work goes on either way."""
    ha.etcd[ha.etcd_leader_index()].kill()
    issued = ha.authority.issue("user", "admin", role="admin")
    assert issued.key_pem is not None
    for what, data in (
        ("ca", ha.authority.trust_bundle()),
        ("cert", issued.chain_pem),
        ("key", issued.key_pem),
    ):
        (ha.root / f"u.{what}").write_bytes(data)
    context = Context(
        "ha",
        ",".join(o.listen for o in ha.orchestrators),
        ha.root / "u.ca",
        ha.root / "u.cert",
        ha.root / "u.key",
    )
    with ControlClient(context, timeout=20) as client:
        client.apply(sleeper_app("raft-leader-down", 3))
    settled(ha, ha.workload_ids("raft-leader-down"), timeout=60)


def test_losing_quorum_fails_closed_and_resumes_after(ha: HACluster) -> None:
    leader = ha.wait_leader()
    stub = ha.control(leader.address)
    ha.etcd[1].kill()
    ha.etcd[2].kill()

    def refused() -> bool:
        try:
            stub.Apply(control_pb2.ApplyRequest(app=sleeper_app("no-quorum", 1)), timeout=5)
        except grpc.RpcError as exc:
            return exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INTERNAL)
        return False

    wait_for(refused, 30, "the orchestrators to refuse work without etcd quorum")
    for member in ha.etcd[1:]:
        member.start(ha.etcd)
    for member in ha.etcd[1:]:
        member.wait_listening()
    new = ha.wait_leader(above=leader.epoch, timeout=60)  # the old one stepped down

    def applied() -> bool:
        try:
            ha.control(new.address).Apply(
                control_pb2.ApplyRequest(app=sleeper_app("after-quorum", 2)), timeout=10
            )
        except grpc.RpcError:
            return False
        return True

    wait_for(applied, 60, "an apply once quorum is back")
    settled(ha, ha.workload_ids("after-quorum"), timeout=60)


def test_a_token_of_the_old_epoch_is_refused_once_the_new_one_is_seen(ha: HACluster) -> None:
    old = ha.wait_leader()
    ha.by_address(old.address).kill9()
    new = ha.wait_leader(above=old.epoch)
    stub = ha.control(new.address)
    stub.Apply(control_pb2.ApplyRequest(app=sleeper_app("seen", 2)), timeout=10)
    running = settled(ha, ha.workload_ids("seen"), timeout=60)
    # These nodes were told to create by the new leader: they have seen its epoch.
    assert_old_epoch_refused(ha, running, stub, old.epoch, new.epoch)


def _call(fn: object) -> object:
    try:
        return fn()  # type: ignore[operator]
    except grpc.RpcError as exc:
        return exc


def assert_old_epoch_refused(
    ha: HACluster,
    running: dict[str, list[str]],
    stub: control_pb2_grpc.ControlServiceStub,
    old_epoch: int,
    new_epoch: int,
) -> None:
    """Every node that ran something for the new leader refuses a token of the old
    epoch with PERMISSION_DENIED "stale epoch", and obeys the same token of the new."""
    told = {nodes[0] for nodes in running.values()}
    addresses = {n.name: n.address for n in stub.ListNodes(control_pb2.ListNodesRequest()).nodes}
    keys = TokenKeyStore.open(ha.root / "pki" / "token-keys")
    issued = ha.authority.issue("orchestrator", "orchestrator")
    assert issued.key_pem is not None
    creds = client_credentials(issued.chain_pem, issued.key_pem, ha.authority.trust_bundle())
    for name in sorted(told):
        node = node_pb2_grpc.NodeServiceStub(grpc.secure_channel(addresses[name], creds))

        def token(epoch: int, node_name: str = name) -> tuple[tuple[str, str], ...]:
            minted = mint(
                keys.signer(),
                iss=issued.identity.uri,
                sub=issued.identity.uri,
                aud=f"spiffe://{TD}/node/{node_name}",
                op="node.info",
                res="*",
                cnf=issued.thumbprint,
                ttl=30,
                epoch=epoch,
            )
            return (("authorization", f"Bearer {minted}"),)

        with pytest.raises(grpc.RpcError) as refused:
            node.GetNodeInfo(node_pb2.NodeInfoRequest(), metadata=token(old_epoch), timeout=10)
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert refused.value.details() == "stale epoch"
        # The same token with the new epoch is obeyed: the epoch alone was refused.
        node.GetNodeInfo(node_pb2.NodeInfoRequest(), metadata=token(new_epoch), timeout=10)
