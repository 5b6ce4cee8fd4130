"""The real orchestrator for node join and report tests: its NodeGateway servicer behind
its authorization interceptor, over real mTLS on 127.0.0.1, with a SQLite store in the
test's directory (tests/control_api/conftest.py starts it).

What a test needs the orchestrator to send, it makes the orchestrator send: a join token
from the admin API, a fence by moving a workload away, a task through its delegator,
trust updates through the queue of the node's open Report stream. What a node sent is
read where the orchestrator keeps it (node records, its liveness tracker, the audit
log). Only what the orchestrator itself never sees, the Join request on the wire, is
read by a ``Wiretap``: a relay in front of the real Join endpoint that records each
request (and can alter an answer, as a hostile orchestrator would).
"""

from __future__ import annotations

import base64
import itertools
import secrets
import socket
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import grpc
import pytest

from node.join import ca_pin
from node.runtime.process import ProcessRuntime, ensure_busybox_image
from orchestrator.liveness import NodeView
from pki.authority import Authority, Issued
from pki.tokenkeys import TokenKeyStore
from protos import control_pb2, gateway_pb2, gateway_pb2_grpc
from protos.wire.trust import sign_trust_update
from tests.control_api.conftest import TD, Running, start_orchestrator, stop_orchestrator
from tests.waiting import wait_for

IMAGE = "local/busybox:1"
HEARTBEAT = 0.1
# The orchestrator serves on an address of its own: its addresses are reserved, no node
# certificate may carry them, and these tests' nodes listen on 127.0.0.1.
HOST = "127.0.0.8"

T = TypeVar("T")


@dataclass
class Pki:
    """A cluster PKI the orchestrator serves from, and a certificate of the orchestrator's
    identity for the tests' own calls to nodes as the orchestrator."""

    root: Path
    authority: Authority
    orch: Issued
    orch_key: bytes
    ca_file: Path

    @property
    def directory(self) -> Path:
        return self.root / "pki"

    @property
    def keys(self) -> TokenKeyStore:
        """The orchestrator's token keys (re-read: a rotation is seen)."""
        return TokenKeyStore.open(self.directory / "token-keys")

    @property
    def orchestrator_id(self) -> str:
        return self.orch.identity.uri

    @property
    def pin(self) -> str:
        return ca_pin(self.authority.trust_roots()[0])


def _make_pki(root: Path) -> Pki:
    authority = Authority.init(root / "pki", TD)
    # The name start_orchestrator's orchestrator runs under (OrchestratorConfig.name).
    orch = authority.issue("orchestrator", "orchestrator", ips=["127.0.0.1"])
    assert orch.key_pem is not None
    ca_file = root / "cluster-ca.crt"
    ca_file.write_bytes(authority.trust_bundle())
    return Pki(root, authority, orch, orch.key_pem, ca_file)


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return _make_pki(tmp_path_factory.mktemp("cluster"))


@pytest.fixture(scope="session")
def evil_pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """Another CA with the same trust domain: nothing of it may be trusted."""
    return _make_pki(tmp_path_factory.mktemp("evil"))


def new_secret() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode()


_ORDER = itertools.count(1)


@dataclass
class Orchestrator:
    """A running orchestrator and what tests read from it or make it do."""

    pki: Pki
    running: Running
    heartbeat: float
    root: Path

    # -- addresses ------------------------------------------------------------------------

    @property
    def join_address(self) -> str:
        return self.running.join_target

    @property
    def gateway_address(self) -> str:
        return self.running.orch.gateway.gateway_address

    @property
    def identity(self) -> str:
        return self.running.orch.identity

    def restart(self) -> None:
        """Stop, then serve again on the same port from the same store and PKI."""
        port = self.running.orch.port
        stop_orchestrator(self.running)
        self.running = _start(self.root, self.pki, self.heartbeat, port=port)

    # -- driving it -----------------------------------------------------------------------

    def on_loop(self, fn: Callable[[], T]) -> T:
        """``fn`` on the orchestrator's event loop: its records are not thread-safe."""

        async def call() -> T:
            return fn()

        return self.running.run(call())  # type: ignore[return-value]

    def mint(self, name: str = "") -> str:
        """A one-time join token from the admin API."""
        request = control_pb2.JoinTokenRequest(name=name)
        return str(self.running.control().CreateJoinToken(request).token)

    def assign(self, workload: str, node: str, *, moved_from: str = "") -> None:
        """Record that ``workload`` runs on ``node`` (so the gateway accepts its containers
        there). With ``moved_from``, the workload left that node: a copy still running
        there is fenced at its next report."""
        state = self.running.orch.state

        async def save() -> None:
            async with state.lock:
                w = state.workload(workload) or control_pb2.Workload(
                    id=workload, tenant="default", app="reported", service="w"
                )
                w.node, w.desired, w.state = node, "running", "running"
                if moved_from and moved_from not in w.previous_nodes:
                    w.previous_nodes.append(moved_from)
                await state.save_workload(w)

        self.running.run(save())

    def connected(self, node: str) -> bool:
        streams = self.running.orch.streams
        return self.on_loop(lambda: streams.get(node) is not None)

    def push(self, node: str, message: gateway_pb2.GatewayMessage) -> None:
        """Queue ``message`` on ``node``'s open Report stream, as the orchestrator's own
        senders do (fences, tasks, trust, links all go through this queue)."""
        wait_for(lambda: self.connected(node), what=f"{node}'s Report stream")
        streams = self.running.orch.streams
        sent = self.on_loop(lambda: streams.send(node, message))
        assert sent, f"{node} is not connected"

    def delegate_fetch(self, image: str, *, target: str, source: str) -> str:
        """Have the orchestrator's delegator send ``target`` a task to fetch ``image``
        from ``source`` (as the reconciler does for a missing image); its request id."""
        orch = self.running.orch
        delegator = orch.reconciler.delegator
        assert delegator is not None
        to, of = self.node(target), self.node(source)
        assert to is not None and of is not None
        task = self.running.run(
            delegator.fetch(kind="image.fetch", resource=image, workload="w", target=to, source=of)
        )
        return str(task.request_id)  # type: ignore[attr-defined]

    def ask_renewal(self, node: str) -> bool:
        """Ask ``node`` to renew now, as a CA rotation does; whether it was connected."""
        streams = self.running.orch.streams
        message = gateway_pb2.GatewayMessage(sent_at=time.time(), renew_now=True)
        return self.on_loop(lambda: streams.ask_renewal(node, message))

    def renewal_asked(self, node: str) -> bool:
        streams = self.running.orch.streams
        return self.on_loop(lambda: streams.renewal_asked(node))

    def signed(
        self, update: gateway_pb2.TrustUpdate, *stores: TokenKeyStore
    ) -> gateway_pb2.TrustUpdate:
        """``update`` as the orchestrator sends it: of its epoch, ordered after every
        earlier update, signed by each key of ``stores``."""
        leadership = self.running.orch.leadership
        assert leadership is not None
        update.epoch = leadership.epoch
        update.issued_at_ms = int(time.time() * 1000) + next(_ORDER)
        sign_trust_update(update, [signer for store in stores for signer in store.signers()])
        return update

    # -- reading it -----------------------------------------------------------------------

    def node(self, name: str) -> control_pb2.NodeRecord | None:
        return self.on_loop(lambda: self.running.orch.state.node(name))

    def nodes(self) -> list[control_pb2.NodeRecord]:
        return self.on_loop(self.running.orch.state.all_nodes)

    def view(self, node: str) -> NodeView | None:
        """A copy of what the orchestrator last heard from ``node``."""

        def copy() -> NodeView | None:
            v = self.running.orch.reconciler.tracker.nodes.get(node)
            if v is None:
                return None
            return NodeView(
                last_seen=v.last_seen,
                report_at=v.report_at,
                containers=dict(v.containers),
                usage=dict(v.usage),
                images=set(v.images),
                images_known=v.images_known,
                thumbprint=v.thumbprint,
            )

        return self.on_loop(copy)

    def states(self, node: str) -> dict[str, str]:
        """Container name to state, as ``node`` last reported them (accepted ones)."""
        view = self.view(node)
        return {n: c.state for n, c in view.containers.items()} if view else {}

    def audit(self, event: str) -> list[dict[str, Any]]:
        entries: list[dict[str, Any]] = self.running.run(  # type: ignore[assignment]
            self.running.orch.audit.entries()
        )
        return [e for e in entries if e.get("event") == event]


def _start(root: Path, pki: Pki, heartbeat: float, *, port: int = 0) -> Running:
    root.mkdir(parents=True, exist_ok=True)
    return start_orchestrator(
        root,
        pki=pki.directory,
        port=port,
        heartbeat=heartbeat,
        grace=max(2.0, 20 * heartbeat),
        host=HOST,
        # Woken by every report that changes something, never on a timer: a copy the
        # orchestrator moved away is fenced by the gateway at the node's next report,
        # not removed by a reconcile pass that happened to run first.
        reconcile_interval=3600.0,
    )


def start_real(root: Path, pki: Pki, *, heartbeat: float = HEARTBEAT) -> Orchestrator:
    return Orchestrator(pki, _start(root, pki, heartbeat), heartbeat, root)


@pytest.fixture
def orch(pki: Pki, tmp_path: Path) -> Iterator[Orchestrator]:
    o = start_real(tmp_path / "orch", pki)
    yield o
    stop_orchestrator(o.running)


# -- the wire, seen from a relay ------------------------------------------------------------


@dataclass
class Wiretap(gateway_pb2_grpc.NodeGatewayServicer):  # type: ignore[misc]
    """Join, relayed to the real orchestrator through a server of the same CA: records
    every request it receives; ``tamper`` alters the real answer on its way back."""

    upstream: str
    pki: Pki
    joins: list[gateway_pb2.JoinRequest] = field(default_factory=list)
    tamper: Callable[[gateway_pb2.JoinResponse], None] | None = None
    address: str = ""
    _server: grpc.Server | None = None

    def Join(self, request: gateway_pb2.JoinRequest, context: Any) -> gateway_pb2.JoinResponse:
        self.joins.append(request)
        creds = grpc.ssl_channel_credentials(self.pki.authority.trust_bundle())
        with grpc.secure_channel(self.upstream, creds) as channel:
            try:
                response: gateway_pb2.JoinResponse = gateway_pb2_grpc.NodeGatewayStub(
                    channel
                ).Join(request, timeout=30)
            except grpc.RpcError as exc:
                context.abort(exc.code(), exc.details())
        if self.tamper is not None:
            self.tamper(response)
        return response

    def start(self) -> Wiretap:
        relay = self.pki.authority.issue("orchestrator", "relay", ips=["127.0.0.1"])
        assert relay.key_pem is not None
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=4), options=[("grpc.so_reuseport", 0)]
        )
        gateway_pb2_grpc.add_NodeGatewayServicer_to_server(self, server)
        port = server.add_secure_port(
            "127.0.0.1:0", grpc.ssl_server_credentials([(relay.key_pem, relay.chain_pem)])
        )
        server.start()
        self._server, self.address = server, f"127.0.0.1:{port}"
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop(0).wait()


@pytest.fixture
def wiretap(orch: Orchestrator, pki: Pki) -> Iterator[Wiretap]:
    tap = Wiretap(orch.join_address, pki).start()
    yield tap
    tap.stop()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- workloads ----------------------------------------------------------------------------


def add_busybox(runtime: ProcessRuntime) -> None:
    ensure_busybox_image(runtime, IMAGE)
