"""The Report stream of a joined node against the real orchestrator over real mTLS."""

from __future__ import annotations

import builtins
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
from orchestrator.liveness import NodeView
from pki.certs import load_pem_chain, thumbprint
from pki.tokenkeys import TokenKeyStore
from pki.tokens import mint
from protos import gateway_pb2, node_pb2, node_pb2_grpc
from protos.wire.channel import client_credentials
from protos.wire.trust import parse_deny_list, sign_trust_update
from tests.node_process.conftest import kill_recorded
from tests.waiting import wait_for

from .conftest import IMAGE, Orchestrator, Pki, add_busybox

FAST = Backoff(initial=0.05, maximum=0.2)


@pytest.fixture
def node(orch: Orchestrator, pki: Pki, tmp_path: Path) -> Iterator[JoinedNode]:
    state = tmp_path / "state"
    join(
        state,
        orch.join_address,
        orch.mint(),
        pki.ca_file,
        JoinOptions(name="rep", runtime="process"),
    )
    n = run_joined_node(state, backoff=FAST)
    add_busybox(n.agent.runtime)  # type: ignore[arg-type]
    yield n
    n.stop(0)
    kill_recorded(state)


def _sleeper(node: JoinedNode, name: str, workload: str = "w") -> None:
    rt = node.agent.runtime
    rt.create(
        ContainerSpec(name=name, workload_id=workload, image=IMAGE, command=("sleep", "600"))
    )
    rt.start(name)


def _opened(node: JoinedNode, reporter: Reporter | None = None) -> None:
    """Wait until ``reporter``'s stream is the one the orchestrator holds: it has
    received the trust update the orchestrator sends first on every stream."""
    r = reporter or node.reporter
    wait_for(lambda: r.messages >= 1, what="the stream's first message")


def test_heartbeats_carry_the_container_list_and_usage(
    node: JoinedNode, orch: Orchestrator
) -> None:
    orch.assign("w", "rep")
    _sleeper(node, "web-1")
    node.agent.runtime.create(
        ContainerSpec(name="idle", workload_id="w", image=IMAGE, command=("true",))
    )

    def reported() -> NodeView | None:
        view = orch.view("rep")
        if (
            view is not None
            and {n: c.state for n, c in view.containers.items()}
            == {"web-1": "running", "idle": "created"}
            and "web-1" in view.usage
        ):
            return view
        return None

    wait_for(reported, what="a heartbeat listing web-1 with its usage")
    view = reported()
    assert view is not None
    assert list(view.usage) == ["web-1"]  # only running containers
    assert {i for i in view.images if "@" not in i} == {IMAGE}
    assert view.usage["web-1"].memory_bytes > 0
    assert view.report_at > 0
    # The stream is authenticated by the node certificate.
    cert = load_pem_chain(node.joined.files.cert.read_bytes())[0]
    assert view.thumbprint == thumbprint(cert)
    record = orch.node("rep")
    assert record is not None and record.id == node.node_id


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


def test_a_trust_update_rewrites_jwks_and_deny_list_and_the_agent_obeys_them(
    node: JoinedNode, orch: Orchestrator, pki: Pki, tmp_path: Path
) -> None:
    signed = orch.signed
    _opened(node)
    files = node.joined.files
    rolled = TokenKeyStore.create(tmp_path / "rolled-keys")
    ok = (grpc.StatusCode.OK, "")
    assert _node_info(node, pki, pki.keys) == ok
    assert _node_info(node, pki, rolled)[0] == grpc.StatusCode.UNAUTHENTICATED

    new_jwks = json.dumps(rolled.jwks()).encode()
    orch.push(
        "rep",
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
    orch.push(
        "rep",
        gateway_pb2.GatewayMessage(trust=signed(gateway_pb2.TrustUpdate(deny_list=deny), rolled))
    )
    wait_for(lambda: files.deny_list.read_bytes() == deny, what="the revocation")
    assert parse_deny_list(files.deny_list.read_bytes()) == {pki.orch.serial}
    assert _node_info(node, pki, rolled) == (grpc.StatusCode.UNAUTHENTICATED, "certificate revoked")
    assert files.jwks.read_bytes() == new_jwks  # a deny-list-only update keeps the keys

    # The same trust again (as at every stream start) leaves the files untouched.
    stamp = files.jwks.stat().st_ino, files.jwks.stat().st_mtime_ns
    orch.push(
        "rep",
        gateway_pb2.GatewayMessage(trust=signed(gateway_pb2.TrustUpdate(jwks=new_jwks), rolled))
    )
    orch.push(
        "rep",
        gateway_pb2.GatewayMessage(
            trust=signed(gateway_pb2.TrustUpdate(deny_list=b"# marker\n"), rolled)
        )
    )
    wait_for(lambda: files.deny_list.read_bytes() == b"# marker\n", what="the marker update")
    assert (files.jwks.stat().st_ino, files.jwks.stat().st_mtime_ns) == stamp


def test_unusable_or_empty_trust_fields_leave_the_files_alone(
    node: JoinedNode, orch: Orchestrator, pki: Pki
) -> None:
    signed = orch.signed
    _opened(node)
    files = node.joined.files
    jwks_before = files.jwks.read_bytes()
    before = node.reporter.messages
    orch.push(
        "rep",
        gateway_pb2.GatewayMessage(
            trust=signed(
                gateway_pb2.TrustUpdate(jwks=b'{"keys": []}', deny_list=b"not hex\n"), pki.keys
            )
        )
    )
    # Empty deny list: "unchanged", never "forget every revocation".
    orch.push(
        "rep",
        gateway_pb2.GatewayMessage(
            trust=signed(gateway_pb2.TrustUpdate(jwks=b"", deny_list=b""), pki.keys)
        )
    )
    orch.push(
        "rep",
        gateway_pb2.GatewayMessage(
            trust=signed(gateway_pb2.TrustUpdate(deny_list=b"# none\n"), pki.keys)
        )
    )
    wait_for(lambda: files.deny_list.read_bytes() == b"# none\n", what="the last update")
    assert files.jwks.read_bytes() == jwks_before
    assert node.reporter.messages == before + 3
    assert node.reporter.streams == 1 and orch.connected("rep")  # it survived the bad update


def test_a_fence_stops_and_removes_the_container(node: JoinedNode, orch: Orchestrator) -> None:
    orch.assign("w1", "rep")
    orch.assign("w2", "rep")
    _sleeper(node, "web-1", "w1")
    _sleeper(node, "web-2", "w2")
    pid = node.agent.runtime.inspect("web-1").pid
    wait_for(
        lambda: orch.states("rep") == {"web-1": "running", "web-2": "running"},
        what="both containers reported",
    )
    # A fence naming a container the node no longer has (gone before the fence came).
    orch.push("rep", gateway_pb2.GatewayMessage(fence=["never-existed"]))
    # The orchestrator moves w1 away: the copy left on this node is fenced.
    orch.assign("w1", "elsewhere", moved_from="rep")
    wait_for(lambda: "web-1" in node.reporter.fenced, what="web-1 fenced")
    assert [c.name for c in node.agent.runtime.list()] == ["web-2"]
    assert list(node.reporter.fenced) == ["web-1"]  # a missing container is simply already fenced
    assert pid is not None
    st = proc.read_stat(pid)
    assert st is None or st.gone  # the workload's process is dead, not merely forgotten
    wait_for(
        lambda: orch.states("rep") == {"web-2": "running"}, what="a heartbeat without web-1"
    )


def test_the_stream_comes_back_after_the_gateway_restarts_with_a_renewed_cert(
    node: JoinedNode, orch: Orchestrator, pki: Pki
) -> None:
    wait_for(lambda: (orch.view("rep") or NodeView()).last_seen > 0, what="a first stream")
    first = (orch.view("rep") or NodeView()).thumbprint
    assert first

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

    orch.restart()  # the same port, store and CA: the node finds it where it was

    def restarted() -> bool:
        view = orch.view("rep")
        return view is not None and view.last_seen > 0

    wait_for(restarted, what="a heartbeat on the restarted orchestrator")
    second = orch.view("rep")
    assert second is not None
    assert second.thumbprint == renewed.thumbprint != first
    record = orch.node("rep")
    assert record is not None and record.id == node.node_id
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
    node: JoinedNode, orch: Orchestrator, flaky: tuple[FlakyRuntime, Reporter]
) -> None:
    rt, reporter = flaky
    orch.assign("w", "rep")
    _sleeper(node, "a")
    _sleeper(node, "b")
    rt.stats_fail = {"a"}
    reporter.start()

    def b_alone() -> bool:
        view = orch.view("rep")
        return view is not None and set(view.containers) == {"a", "b"} and list(view.usage) == ["b"]

    wait_for(b_alone, what="usage for b alone")


def _running_a(node: JoinedNode, orch: Orchestrator, reporter: Reporter) -> NodeView:
    """Container ``a`` of an assigned workload, started; what the orchestrator holds
    once ``reporter`` has listed it."""
    orch.assign("w", "rep")
    _sleeper(node, "a")
    reporter.start()
    wait_for(lambda: orch.states("rep") == {"a": "running"}, what="a full list with a")
    listed = orch.view("rep")
    assert listed is not None
    return listed


def test_a_failing_runtime_still_heartbeats_without_claiming_an_empty_node(
    node: JoinedNode, orch: Orchestrator, flaky: tuple[FlakyRuntime, Reporter]
) -> None:
    rt, reporter = flaky
    listed = _running_a(node, orch, reporter)
    rt.list_fails = True
    beats = reporter.heartbeats
    wait_for(
        lambda: reporter.heartbeats >= beats + 3
        and (orch.view("rep") or NodeView()).last_seen > listed.last_seen,
        what="heartbeats while the runtime fails",
    )
    failing = orch.view("rep")
    assert failing is not None
    # Heard from, but no complete list: the orchestrator still knows what runs there.
    assert failing.report_at == listed.report_at
    assert failing.containers.keys() == {"a"} and failing.images == listed.images
    rt.list_fails = False
    wait_for(
        lambda: (orch.view("rep") or NodeView()).report_at > listed.report_at,
        what="a full list once the runtime answers again",
    )
    assert orch.states("rep") == {"a": "running"}


def test_slow_stats_do_not_delay_heartbeats(
    node: JoinedNode, orch: Orchestrator, flaky: tuple[FlakyRuntime, Reporter]
) -> None:
    rt, reporter = flaky
    orch.assign("w", "rep")
    _sleeper(node, "a")
    rt.stats_gate = threading.Event()  # stats hang until the test lets them go
    reporter.start()
    wait_for(
        lambda: reporter.heartbeats >= 5 and orch.states("rep") == {"a": "running"},
        what="heartbeats while stats hang",
    )
    assert reporter.usage_rounds == 0
    assert "a" not in (orch.view("rep") or NodeView()).usage
    rt.stats_gate.set()
    wait_for(
        lambda: "a" in (orch.view("rep") or NodeView()).usage, what="usage once stats answer"
    )


def test_a_slow_container_list_does_not_delay_heartbeats(
    node: JoinedNode, orch: Orchestrator, flaky: tuple[FlakyRuntime, Reporter]
) -> None:
    # A busy engine answers an inspect only once the container's start ends: the node
    # must keep beating meanwhile, or the orchestrator declares a live node dead.
    rt, reporter = flaky
    listed = _running_a(node, orch, reporter)
    rt.list_gate = threading.Event()  # the next list hangs until the test lets it go
    interval = node.joined.heartbeat_interval
    wait_for(
        lambda: (orch.view("rep") or NodeView()).last_seen > listed.last_seen + 3 * interval,
        what="heartbeats while the list hangs",
    )
    hanging = orch.view("rep")
    assert hanging is not None
    # Heard from, but claiming nothing: not "nothing runs here", not "no images here".
    assert hanging.report_at == listed.report_at
    assert hanging.containers.keys() == {"a"} and hanging.images == listed.images
    record = orch.node("rep")
    assert record is not None and record.state == "ready"
    rt.list_gate.set()
    wait_for(
        lambda: (orch.view("rep") or NodeView()).report_at > listed.report_at,
        what="a full list once the runtime answers",
    )
    assert orch.states("rep") == {"a": "running"}


def test_stop_ends_the_stream_and_every_thread(node: JoinedNode, orch: Orchestrator) -> None:
    wait_for(lambda: orch.connected("rep"), what="a stream")
    node.reporter.stop()
    wait_for(lambda: not orch.connected("rep"), what="the orchestrator to see the stream end")
    assert node.reporter._workers.alive() == []
    heard = (orch.view("rep") or NodeView()).last_seen
    assert node.reporter.streams == 1
    node.reporter.stop()  # idempotent
    assert (orch.view("rep") or NodeView()).last_seen == heard


@pytest.mark.docker
def test_a_docker_node_reports_and_fences_its_containers(
    orch: Orchestrator, pki: Pki, tmp_path: Path, busybox_image: str
) -> None:
    state = tmp_path / "state"
    orch.assign("w", "dock")
    join(
        state,
        orch.join_address,
        orch.mint(),
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
            lambda: orch.states("dock") == {"web-1": "running"}
            and "web-1" in (orch.view("dock") or NodeView()).usage,
            timeout=60,
            what="a heartbeat with web-1 and its usage",
        )
        orch.assign("w", "elsewhere", moved_from="dock")  # moved away: the copy is fenced
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


def test_tasks_go_to_the_executor_hook(
    node: JoinedNode, orch: Orchestrator, pki: Pki, tmp_path: Path
) -> None:
    # The node a fetch would come from: joined, never run (the task is only handed over).
    join(
        tmp_path / "source",
        orch.join_address,
        orch.mint(),
        pki.ca_file,
        JoinOptions(name="source", runtime="process", listen="127.0.0.1:0"),
    )
    node.reporter.stop()
    got: list[gateway_pb2.Task] = []
    reporter = _reporter(node, on_tasks=got.extend)
    reporter.start()
    try:
        _opened(node, reporter)  # a task is sent only on an open stream
        task = orch.delegate_fetch(IMAGE, target="rep", source="source")
        wait_for(lambda: [t.request_id for t in got] == [task], what="the task handed over")
        assert (got[0].kind, got[0].resource) == ("image.fetch", IMAGE)
        assert got[0].token  # the capability to call the source node
    finally:
        reporter.stop()


def test_a_refused_stream_backs_off_instead_of_looping(
    node: JoinedNode, orch: Orchestrator
) -> None:
    """The orchestrator says something, then refuses: each retry waits longer. (It
    refuses a node that claims another node's workload: its first message is already
    sent when the claim is read.)"""
    node.reporter.stop()
    orch.assign("theirs", "another-node")
    _sleeper(node, "claim", "theirs")
    reporter = _reporter(node, backoff=Backoff(initial=0.01, maximum=0.05), healthy_after=600.0)
    reporter.start()
    try:
        wait_for(lambda: reporter.failures >= 5, what="five refused streams")
        assert reporter.messages >= 4  # each refused stream did deliver its message
        assert reporter.failures >= reporter.streams - 1  # never reset by those messages
        assert orch.audit("report.refused")
    finally:
        reporter.stop()


def test_a_trust_update_not_signed_by_a_trusted_key_changes_nothing(
    node: JoinedNode, orch: Orchestrator, pki: Pki, tmp_path: Path
) -> None:
    # Before: whoever spoke on the report stream chose the node's token keys, deny list
    # and CA bundle. Now only an update signed by a key the node already trusts, and
    # not older than the last applied, changes them.
    signed = orch.signed
    _opened(node)
    messages = node.reporter.messages
    files = node.joined.files
    before = (files.jwks.read_bytes(), files.deny_list.read_bytes(), files.ca.read_bytes())
    impostor = TokenKeyStore.create(tmp_path / "impostor-keys")
    evil_jwks = json.dumps(impostor.jwks()).encode()
    evil = gateway_pb2.TrustUpdate(jwks=evil_jwks, deny_list=b"# nothing revoked\n")
    orch.push("rep", gateway_pb2.GatewayMessage(trust=evil))  # unsigned
    orch.push(
        "rep",
        gateway_pb2.GatewayMessage(
            trust=signed(
                gateway_pb2.TrustUpdate(jwks=evil_jwks, deny_list=b"# nothing revoked\n"), impostor
            )
        )
    )  # its own key
    forged = signed(gateway_pb2.TrustUpdate(jwks=evil_jwks), pki.keys)
    forged.jwks = evil_jwks + b" "  # changed after signing
    orch.push("rep", gateway_pb2.GatewayMessage(trust=forged))
    genuine = signed(gateway_pb2.TrustUpdate(deny_list=b"# genuine\n"), pki.keys)
    older = signed(gateway_pb2.TrustUpdate(deny_list=b"# replayed\n"), pki.keys)
    older.issued_at_ms = 0  # a replay of an update from before the last one applied
    sign_trust_update(older, pki.keys.signers())
    orch.push("rep", gateway_pb2.GatewayMessage(trust=genuine))
    orch.push("rep", gateway_pb2.GatewayMessage(trust=older))
    wait_for(lambda: node.reporter.messages >= messages + 5, what="five trust updates")
    assert (files.jwks.read_bytes(), files.ca.read_bytes()) == (before[0], before[2])
    assert files.deny_list.read_bytes() == b"# genuine\n"
    assert node.reporter.trust_refused == 4
    # And the agent still obeys only the genuine keys.
    assert _node_info(node, pki, pki.keys) == (grpc.StatusCode.OK, "")
    assert _node_info(node, pki, impostor)[0] == grpc.StatusCode.UNAUTHENTICATED


def test_an_older_trust_update_is_refused_after_a_restart_too(
    node: JoinedNode, orch: Orchestrator, pki: Pki
) -> None:
    signed = orch.signed
    files = node.joined.files
    older = signed(gateway_pb2.TrustUpdate(deny_list=b"# older\n"), pki.keys)
    newer = gateway_pb2.TrustUpdate(deny_list=b"# newer\n")
    # Issued an hour ahead: the update the orchestrator sends when the restarted node's
    # stream opens (issued now) is older than it too.
    newer.epoch = older.epoch
    newer.issued_at_ms = older.issued_at_ms + 3_600_000
    sign_trust_update(newer, pki.keys.signers())
    orch.push("rep", gateway_pb2.GatewayMessage(trust=newer))
    wait_for(lambda: files.deny_list.read_bytes() == b"# newer\n", what="the newer update")
    node.reporter.stop()
    restarted = _reporter(node)  # a node restart: nothing of the old reporter in memory
    restarted.start()
    try:
        # The stream's first update is older than the newer one: refused.
        wait_for(lambda: restarted.trust_refused == 1, what="the stream's first update refused")
        orch.push("rep", gateway_pb2.GatewayMessage(trust=older))
        wait_for(lambda: restarted.trust_refused == 2, what="the replay refused")
        assert files.deny_list.read_bytes() == b"# newer\n"
    finally:
        restarted.stop()


def test_a_renewal_asked_while_the_stream_reconnects_is_not_lost(
    node: JoinedNode, orch: Orchestrator
) -> None:
    """Regression: a renew_now sent while the node's Report stream was reconnecting
    went to no stream (or to the one ending) and was lost; a CA rotation then waited a
    whole batch timeout for that node (the rotation test failed one run in four)."""
    renewer = node.renewer
    assert renewer is not None
    node.reporter.stop()
    wait_for(lambda: not orch.connected("rep"), what="the stream to end")
    assert orch.ask_renewal("rep") is False  # nothing to send it on now
    reporter = _reporter(node)
    reporter.on_renew = renewer.renew_now
    before = renewer.renewals
    reporter.start()
    try:
        wait_for(lambda: renewer.renewals > before, what="the node to renew as asked")
        # Fulfilled: the streams the node opens from now on do not ask again.
        wait_for(lambda: not orch.renewal_asked("rep"), what="the request to be dropped")
    finally:
        reporter.stop()
