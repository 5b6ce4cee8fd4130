"""The Report stream of a joined node against a real NodeGateway over real mTLS."""

from __future__ import annotations

import builtins
import itertools
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from node.agent import JoinedNode, run_joined_node
from node.errors import RuntimeUnavailable
from node.join import JoinOptions, join
from node.reconnect import Backoff
from node.reporter import Reporter
from node.runtime import proc
from node.runtime.base import ContainerSpec, ContainerStats, ContainerStatus
from node.runtime.process import ProcessRuntime
from pki.tokenkeys import TokenKeyStore
from pki.tokens import mint
from protos import gateway_pb2, node_pb2, node_pb2_grpc
from protos.wire.channel import client_credentials
from protos.wire.trust import parse_deny_list, sign_trust_update
from tests.waiting import wait_for

from .conftest import IMAGE, GatewayServers, Pki, add_busybox, kill_recorded

FAST = Backoff(initial=0.05, maximum=0.2)


@pytest.fixture
def node(servers: GatewayServers, pki: Pki, tmp_path: Path) -> Iterator[JoinedNode]:
    state = tmp_path / "state"
    join(
        state,
        servers.join_address,
        servers.gateway.mint(),
        pki.ca_file,
        JoinOptions(name="rep", runtime="process"),
    )
    n = run_joined_node(state, backoff=FAST)
    add_busybox(n.agent.runtime)  # type: ignore[arg-type]
    yield n
    n.stop(0)
    kill_recorded(state)


def _sleeper(node: JoinedNode, name: str) -> None:
    rt = node.agent.runtime
    rt.create(ContainerSpec(name=name, workload_id="w", image=IMAGE, command=("sleep", "600")))
    rt.start(name)


def _names(status: gateway_pb2.NodeStatus) -> dict[str, str]:
    return {c.name: c.state for c in status.containers}


def test_heartbeats_carry_the_container_list_and_usage(
    node: JoinedNode, servers: GatewayServers
) -> None:
    gw = servers.gateway
    _sleeper(node, "web-1")
    node.agent.runtime.create(
        ContainerSpec(name="idle", workload_id="w", image=IMAGE, command=("true",))
    )

    def reported() -> gateway_pb2.NodeStatus | None:
        for s in reversed(gw.statuses()):
            if (
                s.full
                and _names(s) == {"web-1": "running", "idle": "created"}
                and any(u.name == "web-1" for u in s.usage)
            ):
                return s
        return None

    wait_for(reported, what="a heartbeat listing web-1 with its usage")
    status = reported()
    assert status is not None
    assert [u.name for u in status.usage] == ["web-1"]  # only running containers
    assert list(status.images) == [IMAGE]
    assert status.usage[0].memory_bytes > 0
    assert status.sent_at > 0
    seen = gw.live()
    assert seen is not None
    assert seen.peer == node.node_id  # the stream is authenticated by the node certificate


def _node_info(node: JoinedNode, pki: Pki, keys: TokenKeyStore) -> tuple[grpc.StatusCode, str]:
    """GetNodeInfo as the orchestrator, with a token signed by ``keys``: status and reason."""
    token = mint(
        keys.signer(),
        iss=pki.orchestrator_id,
        sub=pki.orchestrator_id,
        aud=node.node_id,
        op="node.info",
        res="*",
        cnf=pki.orch.thumbprint,
    )
    creds = client_credentials(pki.orch.chain_pem, pki.orch_key, pki.authority.trust_bundle())
    with grpc.secure_channel(node.listening, creds) as channel:
        try:
            node_pb2_grpc.NodeServiceStub(channel).GetNodeInfo(
                node_pb2.NodeInfoRequest(),
                metadata=(("authorization", f"Bearer {token}"),),
                timeout=10,
            )
        except grpc.RpcError as exc:
            return exc.code(), exc.details()
    return grpc.StatusCode.OK, ""


_ISSUED = itertools.count(1)


def signed(update: gateway_pb2.TrustUpdate, *stores: TokenKeyStore) -> gateway_pb2.TrustUpdate:
    """``update`` as the orchestrator sends it: ordered after every earlier one, signed
    by each key of ``stores``."""
    update.issued_at_ms = next(_ISSUED)
    sign_trust_update(update, [signer for store in stores for signer in store.signers()])
    return update


def test_a_trust_update_rewrites_jwks_and_deny_list_and_the_agent_obeys_them(
    node: JoinedNode, servers: GatewayServers, pki: Pki, tmp_path: Path
) -> None:
    gw = servers.gateway
    files = node.joined.files
    rolled = TokenKeyStore.create(tmp_path / "rolled-keys")
    ok = (grpc.StatusCode.OK, "")
    assert _node_info(node, pki, pki.keys) == ok
    assert _node_info(node, pki, rolled)[0] == grpc.StatusCode.UNAUTHENTICATED

    new_jwks = json.dumps(rolled.jwks()).encode()
    gw.push(
        gateway_pb2.GatewayMessage(
            trust=signed(
                gateway_pb2.TrustUpdate(jwks=new_jwks, deny_list=b"1F\nABCDEF\n"), pki.keys
            )
        )
    )
    wait_for(lambda: files.deny_list.read_bytes() == b"1F\nABCDEF\n", what="deny.txt rewritten")
    assert files.jwks.read_bytes() == new_jwks
    assert _node_info(node, pki, rolled) == ok
    assert _node_info(node, pki, pki.keys)[0] == grpc.StatusCode.UNAUTHENTICATED  # rolled out

    # Revoking the caller's certificate: the next call is refused.
    deny = f"{pki.orch.serial:X}\n".encode()
    # From now on the node trusts only the rolled key: updates are signed with it.
    gw.push(
        gateway_pb2.GatewayMessage(trust=signed(gateway_pb2.TrustUpdate(deny_list=deny), rolled))
    )
    wait_for(lambda: files.deny_list.read_bytes() == deny, what="the revocation")
    assert parse_deny_list(files.deny_list.read_bytes()) == {pki.orch.serial}
    assert _node_info(node, pki, rolled) == (grpc.StatusCode.UNAUTHENTICATED, "certificate revoked")
    assert files.jwks.read_bytes() == new_jwks  # a deny-list-only update keeps the keys

    # The same trust again (as at every stream start) leaves the files untouched.
    stamp = files.jwks.stat().st_ino, files.jwks.stat().st_mtime_ns
    gw.push(
        gateway_pb2.GatewayMessage(trust=signed(gateway_pb2.TrustUpdate(jwks=new_jwks), rolled))
    )
    gw.push(
        gateway_pb2.GatewayMessage(
            trust=signed(gateway_pb2.TrustUpdate(deny_list=b"# marker\n"), rolled)
        )
    )
    wait_for(lambda: files.deny_list.read_bytes() == b"# marker\n", what="the marker update")
    assert (files.jwks.stat().st_ino, files.jwks.stat().st_mtime_ns) == stamp


def test_unusable_or_empty_trust_fields_leave_the_files_alone(
    node: JoinedNode, servers: GatewayServers, pki: Pki
) -> None:
    gw = servers.gateway
    files = node.joined.files
    jwks_before = files.jwks.read_bytes()
    gw.push(
        gateway_pb2.GatewayMessage(
            trust=signed(
                gateway_pb2.TrustUpdate(jwks=b'{"keys": []}', deny_list=b"not hex\n"), pki.keys
            )
        )
    )
    # Empty deny list: "unchanged", never "forget every revocation".
    gw.push(
        gateway_pb2.GatewayMessage(
            trust=signed(gateway_pb2.TrustUpdate(jwks=b"", deny_list=b""), pki.keys)
        )
    )
    gw.push(
        gateway_pb2.GatewayMessage(
            trust=signed(gateway_pb2.TrustUpdate(deny_list=b"# none\n"), pki.keys)
        )
    )
    wait_for(lambda: files.deny_list.read_bytes() == b"# none\n", what="the last update")
    assert files.jwks.read_bytes() == jwks_before
    assert node.reporter.messages == 3
    assert gw.live() is not None  # the stream survived the bad update


def test_a_fence_stops_and_removes_the_container(node: JoinedNode, servers: GatewayServers) -> None:
    gw = servers.gateway
    _sleeper(node, "web-1")
    _sleeper(node, "web-2")
    pid = node.agent.runtime.inspect("web-1").pid
    gw.push(gateway_pb2.GatewayMessage(fence=["web-1", "never-existed"]))
    wait_for(lambda: "web-1" in node.reporter.fenced, what="web-1 fenced")
    assert [c.name for c in node.agent.runtime.list()] == ["web-2"]
    assert list(node.reporter.fenced) == ["web-1"]  # a missing container is simply already fenced
    assert pid is not None
    st = proc.read_stat(pid)
    assert st is None or st.gone  # the workload's process is dead, not merely forgotten
    wait_for(
        lambda: any(_names(s) == {"web-2": "running"} for s in gw.statuses()[-3:]),
        what="a heartbeat without web-1",
    )


def test_the_stream_comes_back_after_the_gateway_restarts_with_a_renewed_cert(
    node: JoinedNode, servers: GatewayServers, pki: Pki
) -> None:
    gw = servers.gateway
    wait_for(
        lambda: gw.live() is not None and len(gw.live().statuses) >= 2,  # type: ignore[union-attr]
        what="a first stream",
    )
    first = gw.live()
    assert first is not None

    # Renew the node certificate on disk (same key, new serial), as renewal will.
    files = node.joined.files
    key = serialization.load_pem_private_key(files.key.read_bytes(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "rep")]))
        .sign(key, hashes.SHA256())
    )
    renewed = pki.authority.sign_csr(
        csr.public_bytes(serialization.Encoding.PEM), "node", "rep", ips=["127.0.0.1"]
    )
    files.cert.write_bytes(renewed.chain_pem)

    servers.stop_report()
    wait_for(first.ended.is_set, what="the first stream to end")
    servers.start_report()

    def restarted() -> bool:
        live = gw.live()
        return live is not None and live is not first and len(live.statuses) >= 1

    wait_for(restarted, what="a heartbeat on the restarted gateway")
    second = gw.live()
    assert second is not None
    assert second.peer == node.node_id
    assert second.serial == renewed.serial != first.serial
    assert node.reporter.streams >= 2


class FlakyRuntime:
    """The real process runtime, with faults switched on by the test."""

    def __init__(self, real: ProcessRuntime) -> None:
        self.real = real
        self.name = real.name
        self.node_id = real.node_id
        self.list_fails = False
        self.stats_fail: set[str] = set()
        self.stats_gate: threading.Event | None = None
        self.list_gate: threading.Event | None = None

    def list(self) -> builtins.list[ContainerStatus]:
        if self.list_gate is not None:
            self.list_gate.wait()
        if self.list_fails:
            raise RuntimeUnavailable("engine does not answer")
        return self.real.list()

    def stats(self, name: str) -> ContainerStats:
        if self.stats_gate is not None:
            self.stats_gate.wait()
        if name in self.stats_fail:
            raise RuntimeUnavailable(f"no stats for {name}")
        return self.real.stats(name)

    def images(self) -> builtins.list[str]:
        if self.list_fails:
            raise RuntimeUnavailable("engine does not answer")
        return self.real.images()

    def __getattr__(self, attr: str) -> object:
        return getattr(self.real, attr)


@pytest.fixture
def flaky(node: JoinedNode) -> Iterator[tuple[FlakyRuntime, Reporter]]:
    """A second reporter for the same node, over a runtime that can be made to fail."""
    node.reporter.stop()
    rt = FlakyRuntime(node.agent.runtime)  # type: ignore[arg-type]
    files = node.joined.files
    reporter = Reporter(
        rt,  # type: ignore[arg-type]
        gateway_address=node.joined.gateway_address,
        cert=files.cert,
        key=files.key,
        ca=files.ca,
        jwks=files.jwks,
        deny_list=files.deny_list,
        interval=node.joined.heartbeat_interval,
        backoff=FAST,
    )
    yield rt, reporter
    for gate in (rt.stats_gate, rt.list_gate):
        if gate is not None:
            gate.set()
    reporter.stop()


def test_one_failing_container_does_not_stop_the_usage_report(
    node: JoinedNode, servers: GatewayServers, flaky: tuple[FlakyRuntime, Reporter]
) -> None:
    rt, reporter = flaky
    _sleeper(node, "a")
    _sleeper(node, "b")
    rt.stats_fail = {"a"}
    reporter.start()
    wait_for(
        lambda: any(
            [u.name for u in s.usage] == ["b"]
            for s in servers.gateway.statuses()
            if set(_names(s)) == {"a", "b"}
        ),
        what="usage for b alone",
    )


def test_a_failing_runtime_still_heartbeats_without_claiming_an_empty_node(
    node: JoinedNode, servers: GatewayServers, flaky: tuple[FlakyRuntime, Reporter]
) -> None:
    rt, reporter = flaky
    _sleeper(node, "a")
    rt.list_fails = True
    reporter.start()
    wait_for(
        lambda: sum(1 for s in servers.gateway.statuses() if not s.full) >= 3,
        what="heartbeats while the runtime fails",
    )
    assert all(not s.containers and not s.images for s in servers.gateway.statuses() if not s.full)
    rt.list_fails = False
    wait_for(
        lambda: any(s.full and "a" in _names(s) for s in servers.gateway.statuses()),
        what="a full list once the runtime answers again",
    )


def test_slow_stats_do_not_delay_heartbeats(
    node: JoinedNode, servers: GatewayServers, flaky: tuple[FlakyRuntime, Reporter]
) -> None:
    rt, reporter = flaky
    _sleeper(node, "a")
    rt.stats_gate = threading.Event()  # stats hang until the test lets them go
    reporter.start()
    gw = servers.gateway
    wait_for(
        lambda: sum(1 for s in gw.statuses() if s.full and "a" in _names(s)) >= 5,
        what="heartbeats while stats hang",
    )
    assert reporter.usage_rounds == 0
    assert all(not s.usage for s in gw.statuses() if "a" in _names(s))
    rt.stats_gate.set()
    wait_for(
        lambda: any(u.name == "a" for s in gw.statuses() for u in s.usage),
        what="usage once stats answer",
    )


def test_a_slow_container_list_does_not_delay_heartbeats(
    node: JoinedNode, servers: GatewayServers, flaky: tuple[FlakyRuntime, Reporter]
) -> None:
    # A busy engine answers an inspect only once the container's start ends: the node
    # must keep beating meanwhile, or the orchestrator declares a live node dead.
    rt, reporter = flaky
    _sleeper(node, "a")
    rt.list_gate = threading.Event()  # the list hangs until the test lets it go
    gw = servers.gateway
    before = len(gw.statuses())  # the node's own reporter's, stopped by the fixture
    reporter.start()
    wait_for(
        lambda: len(gw.statuses()[before:]) >= 3, what="heartbeats while the list hangs"
    )
    # Claiming nothing: not "nothing runs here", not "no images here".
    assert all(
        not s.full and not s.containers and not s.images and s.trust_digest
        for s in gw.statuses()[before:]
    )
    rt.list_gate.set()
    wait_for(
        lambda: any(s.full and "a" in _names(s) for s in gw.statuses()[before:]),
        what="the full list once the runtime answers",
    )


def test_stop_ends_the_stream_and_every_thread(node: JoinedNode, servers: GatewayServers) -> None:
    gw = servers.gateway
    wait_for(gw.live, what="a stream")
    seen = gw.live()
    assert seen is not None
    node.reporter.stop()
    wait_for(seen.ended.is_set, what="the gateway to see the stream end")
    assert not any(t.is_alive() for t in node.reporter._threads)
    count = len(gw.statuses())
    assert node.reporter.streams == 1
    node.reporter.stop()  # idempotent
    assert len(gw.statuses()) == count


@pytest.mark.docker
def test_a_docker_node_reports_and_fences_its_containers(
    servers: GatewayServers, pki: Pki, tmp_path: Path, busybox_image: str
) -> None:
    gw = servers.gateway
    state = tmp_path / "state"
    join(
        state,
        servers.join_address,
        gw.mint(),
        pki.ca_file,
        JoinOptions(name="dock", runtime="docker"),
    )
    node = run_joined_node(state, backoff=FAST)
    rt = node.agent.runtime
    try:
        assert rt.name == "docker"
        # Docker nodes see only images in their own namespace: seed it from the engine.
        adopt = getattr(rt, "adopt_image", None)
        if adopt is not None:
            adopt(busybox_image)
        # PID 1 in a container ignores SIGTERM unless it traps it: trap, so the fence's
        # graceful stop ends it at once rather than after the kill timeout.
        rt.create(
            ContainerSpec(
                name="web-1",
                workload_id="w",
                image=busybox_image,
                command=("sh", "-c", "trap 'exit 0' TERM; sleep 600 & wait"),
            )
        )
        rt.start("web-1")
        wait_for(
            lambda: any(_names(s) == {"web-1": "running"} and s.usage for s in gw.statuses()),
            timeout=60,
            what="a heartbeat with web-1 and its usage",
        )
        gw.push(gateway_pb2.GatewayMessage(fence=["web-1"]))
        wait_for(lambda: "web-1" in node.reporter.fenced, timeout=60, what="web-1 fenced")
        assert rt.list() == []
    finally:
        for c in rt.list():
            rt.remove(c.name, force=True)
        forget = getattr(rt, "forget_images", None)
        if forget is not None:
            forget()
        node.stop(0)


def _reporter(node: JoinedNode, **kw: Any) -> Reporter:
    files = node.joined.files
    return Reporter(
        node.agent.runtime,
        gateway_address=node.joined.gateway_address,
        cert=files.cert,
        key=files.key,
        ca=files.ca,
        jwks=files.jwks,
        deny_list=files.deny_list,
        interval=node.joined.heartbeat_interval,
        **kw,
    )


def test_tasks_go_to_the_executor_hook(node: JoinedNode, servers: GatewayServers) -> None:
    node.reporter.stop()
    got: list[str] = []
    reporter = _reporter(node, on_tasks=lambda tasks: got.extend(t.request_id for t in tasks))
    reporter.start()
    try:
        task = gateway_pb2.Task(request_id="r1", kind="image.fetch", resource=IMAGE)
        servers.gateway.push(gateway_pb2.GatewayMessage(tasks=[task]))
        wait_for(lambda: got == ["r1"], what="the task handed over")
    finally:
        reporter.stop()


def test_a_refused_stream_backs_off_instead_of_looping(
    node: JoinedNode, servers: GatewayServers
) -> None:
    """The orchestrator says something, then refuses: each retry waits longer."""
    node.reporter.stop()
    servers.gateway.refuse_reports = True
    reporter = _reporter(node, backoff=Backoff(initial=0.01, maximum=0.05), healthy_after=600.0)
    reporter.start()
    try:
        wait_for(lambda: reporter.failures >= 5, what="five refused streams")
        assert reporter.messages >= 4  # each refused stream did deliver its message
        assert reporter.failures >= reporter.streams - 1  # never reset by those messages
    finally:
        reporter.stop()


def test_a_trust_update_not_signed_by_a_trusted_key_changes_nothing(
    node: JoinedNode, servers: GatewayServers, pki: Pki, tmp_path: Path
) -> None:
    # Before: whoever spoke on the report stream chose the node's token keys, deny list
    # and CA bundle. Now only an update signed by a key the node already trusts, and
    # not older than the last applied, changes them.
    gw = servers.gateway
    files = node.joined.files
    before = (files.jwks.read_bytes(), files.deny_list.read_bytes(), files.ca.read_bytes())
    impostor = TokenKeyStore.create(tmp_path / "impostor-keys")
    evil_jwks = json.dumps(impostor.jwks()).encode()
    evil = gateway_pb2.TrustUpdate(jwks=evil_jwks, deny_list=b"# nothing revoked\n")
    gw.push(gateway_pb2.GatewayMessage(trust=evil))  # unsigned
    gw.push(
        gateway_pb2.GatewayMessage(
            trust=signed(
                gateway_pb2.TrustUpdate(jwks=evil_jwks, deny_list=b"# nothing revoked\n"), impostor
            )
        )
    )  # its own key
    forged = signed(gateway_pb2.TrustUpdate(jwks=evil_jwks), pki.keys)
    forged.jwks = evil_jwks + b" "  # changed after signing
    gw.push(gateway_pb2.GatewayMessage(trust=forged))
    genuine = signed(gateway_pb2.TrustUpdate(deny_list=b"# genuine\n"), pki.keys)
    older = signed(gateway_pb2.TrustUpdate(deny_list=b"# replayed\n"), pki.keys)
    older.issued_at_ms = 0  # a replay of an update from before the last one applied
    sign_trust_update(older, pki.keys.signers())
    gw.push(gateway_pb2.GatewayMessage(trust=genuine))
    gw.push(gateway_pb2.GatewayMessage(trust=older))
    wait_for(lambda: node.reporter.messages >= 5, what="five trust updates")
    assert (files.jwks.read_bytes(), files.ca.read_bytes()) == (before[0], before[2])
    assert files.deny_list.read_bytes() == b"# genuine\n"
    assert node.reporter.trust_refused == 4
    # And the agent still obeys only the genuine keys.
    assert _node_info(node, pki, pki.keys) == (grpc.StatusCode.OK, "")
    assert _node_info(node, pki, impostor)[0] == grpc.StatusCode.UNAUTHENTICATED


def test_an_older_trust_update_is_refused_after_a_restart_too(
    node: JoinedNode, servers: GatewayServers, pki: Pki
) -> None:
    gw = servers.gateway
    files = node.joined.files
    older = signed(gateway_pb2.TrustUpdate(deny_list=b"# older\n"), pki.keys)
    newer = signed(gateway_pb2.TrustUpdate(deny_list=b"# newer\n"), pki.keys)
    gw.push(gateway_pb2.GatewayMessage(trust=newer))
    wait_for(lambda: files.deny_list.read_bytes() == b"# newer\n", what="the newer update")
    node.reporter.stop()
    restarted = _reporter(node)  # a node restart: nothing of the old reporter in memory
    restarted.start()
    try:
        wait_for(lambda: gw.live() is not None and restarted.streams >= 1, what="a new stream")
        gw.push(gateway_pb2.GatewayMessage(trust=older))
        wait_for(lambda: restarted.trust_refused == 1, what="the replay refused")
        assert files.deny_list.read_bytes() == b"# newer\n"
    finally:
        restarted.stop()
