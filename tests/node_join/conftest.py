"""A small but real NodeGateway on 127.0.0.1: Join over server-authenticated TLS, Report
over mTLS, certificates signed by a real pki Authority, JWKS from a real TokenKeyStore.

It stands in for the orchestrator's gateway and records everything it sees, so the
tests can assert what a node sent (and what it never sent).
"""

from __future__ import annotations

import base64
import contextlib
import hmac
import io
import json
import os
import queue
import secrets
import signal
import socket
import tarfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509

from node.join import ca_pin
from node.runtime import proc
from node.runtime.process import STATE_DB, ProcessRuntime
from node.state import NodeState
from pki.authority import Authority, Issued
from pki.certs import identity_of
from pki.tokenkeys import TokenKeyStore
from protos import gateway_pb2, gateway_pb2_grpc
from tests.waiting import wait_for

TD = "join.capstan"
IMAGE = "local/busybox:1"
HEARTBEAT = 0.05


@dataclass
class Pki:
    root: Path
    authority: Authority
    keys: TokenKeyStore
    orch: Issued
    orch_key: bytes
    ca_file: Path

    @property
    def orchestrator_id(self) -> str:
        return self.orch.identity.uri

    @property
    def pin(self) -> str:
        return ca_pin(self.authority.trust_roots()[0])

    def jwks(self) -> bytes:
        return json.dumps(self.keys.jwks()).encode()


def _make_pki(root: Path) -> Pki:
    authority = Authority.init(root / "pki", TD)
    keys = TokenKeyStore.open(root / "pki" / "token-keys")
    orch = authority.issue("orchestrator", "orch", dns=["localhost"], ips=["127.0.0.1"])
    (root / "orch").mkdir()
    authority.write_issued(orch, root / "orch")
    key = next((root / "orch").glob("*.key")).read_bytes()
    ca_file = root / "cluster-ca.crt"
    ca_file.write_bytes(authority.trust_bundle())
    return Pki(root, authority, keys, orch, key, ca_file)


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return _make_pki(tmp_path_factory.mktemp("cluster"))


@pytest.fixture(scope="session")
def evil_pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """Another CA with the same trust domain: nothing of it may be trusted."""
    return _make_pki(tmp_path_factory.mktemp("evil"))


def new_secret() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode()


@dataclass
class Seen:
    """One Report stream as the gateway saw it."""

    peer: str
    serial: int
    statuses: list[gateway_pb2.NodeStatus] = field(default_factory=list)
    outbox: queue.Queue[gateway_pb2.GatewayMessage | None] = field(default_factory=queue.Queue)
    ended: threading.Event = field(default_factory=threading.Event)


class FakeGateway(gateway_pb2_grpc.NodeGatewayServicer):  # type: ignore[misc]
    def __init__(self, pki: Pki, *, heartbeat: float = HEARTBEAT) -> None:
        self.pki = pki
        self.heartbeat = heartbeat
        self.secrets: set[str] = set()
        self.joins: list[gateway_pb2.JoinRequest] = []
        self.streams: list[Seen] = []
        self.lock = threading.Lock()
        self.gateway_address = ""
        # Lets a test corrupt the answer (e.g. a certificate for another key).
        self.tamper: Callable[[gateway_pb2.JoinResponse], None] | None = None
        # Refuse Report streams as the orchestrator refuses a node it will not hear:
        # one message, then PERMISSION_DENIED.
        self.refuse_reports = False

    def mint(self) -> str:
        secret = new_secret()
        self.secrets.add(secret)
        return f"CJ1.{secret}.{self.pki.pin}"

    def Join(self, request: gateway_pb2.JoinRequest, context: Any) -> gateway_pb2.JoinResponse:
        with self.lock:
            self.joins.append(request)
            parts = request.join_token.split(".")
            secret = parts[1] if len(parts) == 3 else ""
            match = next((s for s in self.secrets if hmac.compare_digest(s, secret)), None)
            if match is None:
                context.abort(grpc.StatusCode.PERMISSION_DENIED, "join token is unknown or used")
            self.secrets.discard(match)
        name = request.name or f"node-{len(self.joins)}"
        issued = self.pki.authority.sign_csr(
            request.csr_pem, "node", name, dns=list(request.dns), ips=list(request.ips)
        )
        response = gateway_pb2.JoinResponse(
            node_id=issued.identity.uri,
            name=name,
            certificate_chain=issued.chain_pem,
            trust_bundle=self.pki.authority.trust_bundle(),
            jwks=self.pki.jwks(),
            issuers=[self.pki.orchestrator_id],
            deny_list=b"",
            heartbeat_interval=self.heartbeat,
            gateway_address=self.gateway_address,
        )
        if self.tamper is not None:
            self.tamper(response)
        return response

    def Report(
        self, request_iterator: Iterator[gateway_pb2.NodeStatus], context: Any
    ) -> Iterator[gateway_pb2.GatewayMessage]:
        pem = context.auth_context()["x509_pem_cert"][0]
        cert = x509.load_pem_x509_certificate(pem)
        seen = Seen(identity_of(cert).uri, cert.serial_number)
        with self.lock:
            self.streams.append(seen)
        if self.refuse_reports:
            seen.ended.set()
            yield gateway_pb2.GatewayMessage(sent_at=time.time())
            context.abort(grpc.StatusCode.PERMISSION_DENIED, "not a joined node")
        context.add_callback(lambda: seen.outbox.put(None))

        def consume() -> None:
            try:
                for status in request_iterator:
                    seen.statuses.append(status)
            except grpc.RpcError:
                pass
            finally:
                seen.ended.set()
                seen.outbox.put(None)

        threading.Thread(target=consume, daemon=True).start()
        while True:
            message = seen.outbox.get()
            if message is None:
                return
            yield message

    # -- helpers for tests ------------------------------------------------------------

    def statuses(self) -> list[gateway_pb2.NodeStatus]:
        with self.lock:
            return [s for seen in self.streams for s in seen.statuses]

    def live(self) -> Seen | None:
        with self.lock:
            live = [s for s in self.streams if not s.ended.is_set()]
        return live[-1] if live else None

    def push(self, message: gateway_pb2.GatewayMessage) -> None:
        wait_for(self.live, what="an open Report stream")
        seen = self.live()
        assert seen is not None
        seen.outbox.put(message)


@dataclass
class GatewayServers:
    gateway: FakeGateway
    join_address: str
    report_port: int
    join_server: grpc.Server
    report_server: grpc.Server

    def stop_report(self) -> None:
        self.report_server.stop(0).wait()

    def start_report(self) -> None:
        self.report_server = _report_server(self.gateway, self.report_port)

    def stop(self) -> None:
        self.join_server.stop(0).wait()
        self.report_server.stop(0).wait()


def _server() -> grpc.Server:
    return grpc.server(
        futures.ThreadPoolExecutor(max_workers=16), options=[("grpc.so_reuseport", 0)]
    )


def _report_server(gateway: FakeGateway, port: int) -> grpc.Server:
    pki = gateway.pki
    server = _server()
    gateway_pb2_grpc.add_NodeGatewayServicer_to_server(gateway, server)
    creds = grpc.ssl_server_credentials(
        [(pki.orch_key, pki.orch.chain_pem)],
        root_certificates=pki.authority.trust_bundle(),
        require_client_auth=True,
    )
    bound = server.add_secure_port(f"127.0.0.1:{port}", creds)
    assert bound != 0
    server.start()
    return server


def start_gateway(pki: Pki, *, heartbeat: float = HEARTBEAT) -> GatewayServers:
    gateway = FakeGateway(pki, heartbeat=heartbeat)
    join_server = _server()
    gateway_pb2_grpc.add_NodeGatewayServicer_to_server(gateway, join_server)
    # Server authentication only: a joining node has no certificate yet.
    join_port = join_server.add_secure_port(
        "127.0.0.1:0", grpc.ssl_server_credentials([(pki.orch_key, pki.orch.chain_pem)])
    )
    join_server.start()
    # A fixed port, so a test can restart the Report server where the node expects it.
    report_port = free_port()
    report_server = _report_server(gateway, report_port)
    gateway.gateway_address = f"127.0.0.1:{report_port}"
    return GatewayServers(
        gateway, f"127.0.0.1:{join_port}", report_port, join_server, report_server
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def servers(pki: Pki) -> Iterator[GatewayServers]:
    s = start_gateway(pki)
    yield s
    s.stop()


@pytest.fixture
def gateway(servers: GatewayServers) -> FakeGateway:
    return servers.gateway


# -- workloads ----------------------------------------------------------------------------


def busybox_rootfs(applets: tuple[str, ...] = ("sh", "sleep", "true")) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.add("/bin/busybox", arcname="bin/busybox")
        for applet in applets:
            link = tarfile.TarInfo(f"bin/{applet}")
            link.type = tarfile.SYMTYPE
            link.linkname = "busybox"
            tar.addfile(link)
    return buf.getvalue()


def add_busybox(runtime: ProcessRuntime) -> None:
    if not runtime.image_exists(IMAGE):
        runtime.import_rootfs(IMAGE, [busybox_rootfs()], env=(("PATH", "/bin"),))


def kill_recorded(state_dir: Path) -> None:
    """SIGKILL every workload recorded under ``state_dir`` that still runs (test cleanup)."""
    db = state_dir / STATE_DB
    if not db.exists():
        return
    state = NodeState(db)
    try:
        for rec in state.all():
            if rec.pid is not None and proc.is_same_alive(rec.pid, rec.start_ticks):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(rec.pid, signal.SIGKILL)
    finally:
        state.close()
