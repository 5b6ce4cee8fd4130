"""Hollow nodes: many simulated nodes in one process, for scale benchmarks only.

A hollow node is a real node everywhere the orchestrator can tell, and hollow only
where containers would run:

- it **joins** through the real join flow: a one-time join token, its own P-256 key
  and a CSR, and it keeps the certificate the orchestrator signs;
- it **reports** on the real NodeGateway over real mTLS with that certificate: a
  full container list every heartbeat, and it applies what the gateway pushes
  (deny lists, token keys, fences);
- it **answers push commands** on its own gRPC server and port, through the real
  ``node.authz`` interceptor and ``TokenVerifier`` and the real ``NodeServicer``;
  only the runtime behind them is a ``RecordingRuntime`` that records instead of
  running anything.

Never a substitute for the real node in tests (tests/ use real agents).

Several hundred nodes share one process: one event loop carries every Report
stream, one thread pool serves every node's gRPC server. The process is driven by
JSON lines on stdin (see ``_commands``) and answers with JSON lines on stdout::

    python bench/hollow.py --join HOST:PORT --token-file FILE --ca FILE \
        --names node-0,node-1 --hosts 127.1.0.1,127.1.0.2 --dir DIR

``--token-file`` holds one join token per line, one per name.
"""

from __future__ import annotations

import argparse
import asyncio
import builtins
import contextlib
import json
import logging
import os
import random
import socket
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from concurrent import futures
from dataclasses import dataclass, field, replace
from pathlib import Path

import grpc
import grpc.aio
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from node.audit import NodeAudit
from node.authz import AuthorizationInterceptor, Authorizer
from node.errors import AlreadyExists, NotFound
from node.runtime.base import (
    ContainerSpec,
    ContainerState,
    ContainerStats,
    ContainerStatus,
    RuntimeInfo,
)
from node.service import NodeServicer, status_to_pb
from node.volumes import VolumeStore
from pki.certs import identity_of, load_pem_chain
from pki.tokenkeys import KeySet
from pki.tokens import ReplayCache, TokenVerifier
from protos import gateway_pb2, gateway_pb2_grpc, node_pb2, node_pb2_grpc
from protos.wire.channel import NODE_SERVER_OPTIONS
from protos.wire.grants import Reaper
from protos.wire.trust import parse_deny_list, trust_digest

log = logging.getLogger("capstan.hollow")

IMAGE = "local/busybox:1"
CPUS = 64.0
MEMORY = 256 * 1024**3


class RecordingRuntime:
    """The ``Runtime`` interface, recording instead of running: a create makes a
    record, a start marks it running. Thread-safe (the node's server is threaded)."""

    name = "hollow"

    def __init__(self, node_id: str) -> None:
        self.node_id = node_id
        self._lock = threading.Lock()
        self._containers: dict[str, ContainerStatus] = {}
        self.calls = 0

    def _get(self, name: str) -> ContainerStatus:
        found = self._containers.get(name)
        if found is None:
            raise NotFound(f"container {name} not found")
        return found

    def create(self, spec: ContainerSpec) -> ContainerStatus:
        with self._lock:
            self.calls += 1
            if spec.name in self._containers:
                raise AlreadyExists(f"container {spec.name} already exists")
            status = ContainerStatus(
                spec.name, spec.workload_id, spec.image, ContainerState.CREATED
            )
            self._containers[spec.name] = status
            return status

    def start(self, name: str) -> ContainerStatus:
        with self._lock:
            self.calls += 1
            status = replace(self._get(name), state=ContainerState.RUNNING, started_at=time.time())
            self._containers[name] = status
            return status

    def stop(self, name: str, timeout: float = 10.0) -> ContainerStatus:
        with self._lock:
            self.calls += 1
            status = replace(self._get(name), state=ContainerState.EXITED, exit_code=0)
            self._containers[name] = status
            return status

    def restart(self, name: str, timeout: float = 10.0) -> ContainerStatus:
        self.stop(name, timeout)
        return self.start(name)

    def remove(self, name: str, force: bool = False) -> None:
        with self._lock:
            self.calls += 1
            self._get(name)
            del self._containers[name]

    def inspect(self, name: str) -> ContainerStatus:
        with self._lock:
            return self._get(name)

    def list(self) -> builtins.list[ContainerStatus]:
        with self._lock:
            return builtins.list(self._containers.values())

    def logs(self, name: str, *, follow: bool = False, tail: int = 0) -> Iterator[bytes]:
        self.inspect(name)
        return iter(())

    def stats(self, name: str) -> ContainerStats:
        self.inspect(name)
        return ContainerStats(name, 0.0, 0.0, 0, 0)

    def image_exists(self, ref: str) -> bool:
        return ref == IMAGE

    def images(self) -> builtins.list[str]:
        return [IMAGE]

    def image_ids(self) -> dict[str, str]:
        return {IMAGE: "sha256:" + "0" * 64}

    def image_export(self, ref: str) -> Iterator[bytes]:
        raise NotFound(f"image {ref} not found")

    def image_import(self, chunks: Iterable[bytes]) -> builtins.list[str]:
        for _ in chunks:
            pass
        return [IMAGE]

    def info(self) -> RuntimeInfo:
        return RuntimeInfo("hollow", "0", CPUS, MEMORY)

    def close(self) -> None:
        pass


@dataclass
class HollowNode:
    name: str
    host: str
    port: int
    node_id: str
    serial: int
    key_pem: bytes
    chain_pem: bytes
    bundle: bytes
    jwks: bytes
    gateway: str
    heartbeat: float
    runtime: RecordingRuntime
    server: grpc.Server
    revoked: frozenset[int] = frozenset()
    keys: KeySet | None = None
    # serial -> when this node first refused it (its deny list held it)
    denied_at: dict[int, float] = field(default_factory=dict)
    reporter: asyncio.Task[None] | None = None
    alive: bool = True
    heartbeats: int = 0
    streams: int = 0
    _digest: str | None = None  # of the trust material held, until it changes

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def status(self) -> gateway_pb2.NodeStatus:
        if self._digest is None:
            self._digest = trust_digest(self.jwks, self.bundle)
        return gateway_pb2.NodeStatus(
            sent_at=time.time(),
            containers=[status_to_pb(c) for c in self.runtime.list()],
            full=True,
            images=[IMAGE],
            trust_digest=self._digest,
        )

    def apply_trust(self, trust: gateway_pb2.TrustUpdate) -> None:
        self._digest = None
        if trust.jwks:
            self.keys = KeySet.from_jwks(trust.jwks)
            self.jwks = trust.jwks
        if trust.trust_bundle:
            self.bundle = trust.trust_bundle
        revoked = parse_deny_list(trust.deny_list)
        now = time.time()
        for serial in revoked - self.revoked:
            self.denied_at.setdefault(serial, now)
        self.revoked = revoked


def _csr(key: ec.EllipticCurvePrivateKey, name: str) -> bytes:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    csr = x509.CertificateSigningRequestBuilder().subject_name(subject).sign(key, hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.PEM)


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def join_one(
    *,
    name: str,
    host: str,
    token: str,
    join: str,
    ca: bytes,
    root: Path,
    pool: futures.ThreadPoolExecutor,
) -> HollowNode:
    """Join through the real Join RPC and start this node's authorized server."""
    key = ec.generate_private_key(ec.SECP256R1())
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    port = _free_port(host)
    request = gateway_pb2.JoinRequest(
        join_token=token,
        csr_pem=_csr(key, name),
        name=name,
        ips=[host],
        address=f"{host}:{port}",
        cpus=CPUS,
        memory=MEMORY,
        runtime="hollow",
        mode="push",
    )
    with grpc.secure_channel(join, grpc.ssl_channel_credentials(ca)) as channel:
        response = gateway_pb2_grpc.NodeGatewayStub(channel).Join(request, timeout=120)
    chain = load_pem_chain(response.certificate_chain, "certificate")
    identity = identity_of(chain[0])
    node_dir = root / name
    node_dir.mkdir(parents=True, exist_ok=True)
    runtime = RecordingRuntime(identity.uri)
    node_box: list[HollowNode] = []

    def current_keys() -> KeySet:
        keys = node_box[0].keys
        assert keys is not None
        return keys

    verifier = TokenVerifier(
        current_keys,
        audience=identity.uri,
        issuers=list(response.issuers),
        replay=ReplayCache(),
    )
    authorizer = Authorizer(
        verifier=verifier,
        trust_domain=identity.trust_domain,
        revoked=lambda: node_box[0].revoked,
        audit=NodeAudit(node_dir / "audit.jsonl"),
        clock=time.time,
    )
    server = grpc.server(
        pool,
        interceptors=[
            AuthorizationInterceptor(
                authorizer, reaper=Reaper(clock=time.time, revoked=lambda: node_box[0].revoked)
            )
        ],
        options=NODE_SERVER_OPTIONS,
    )
    servicer = NodeServicer(
        node_id=identity.uri,
        runtime=runtime,
        volumes=VolumeStore(node_dir / "volumes"),
        spool_dir=node_dir / "spool",
    )
    node_pb2_grpc.add_NodeServiceServicer_to_server(servicer, server)
    creds = grpc.ssl_server_credentials(
        [(key_pem, response.certificate_chain)],
        root_certificates=response.trust_bundle,
        require_client_auth=True,
    )
    if server.add_secure_port(f"{host}:{port}", creds) == 0:
        raise RuntimeError(f"{name}: cannot listen on {host}:{port}")
    server.start()
    node = HollowNode(
        name=name,
        host=host,
        port=port,
        node_id=identity.uri,
        serial=chain[0].serial_number,
        key_pem=key_pem,
        chain_pem=response.certificate_chain,
        bundle=response.trust_bundle,
        jwks=response.jwks,
        gateway=response.gateway_address,
        heartbeat=response.heartbeat_interval or 1.0,
        runtime=runtime,
        server=server,
        revoked=parse_deny_list(response.deny_list),
        keys=KeySet.from_jwks(response.jwks),
    )
    node_box.append(node)
    return node


async def report(node: HollowNode, rng: random.Random) -> None:
    """The node's Report stream, reopened when it breaks, until the node is killed."""
    creds = grpc.ssl_channel_credentials(node.bundle, node.key_pem, node.chain_pem)
    while node.alive:
        async with grpc.aio.secure_channel(node.gateway, creds) as channel:
            call = gateway_pb2_grpc.NodeGatewayStub(channel).Report()
            node.streams += 1

            async def send(call: grpc.aio.StreamStreamCall = call) -> None:
                while node.alive:
                    await call.write(node.status())
                    node.heartbeats += 1
                    await asyncio.sleep(node.heartbeat * rng.uniform(0.9, 1.1))

            sender = asyncio.create_task(send())
            try:
                async for message in call:
                    if message.HasField("trust"):
                        node.apply_trust(message.trust)
                    for name in message.fence:
                        with contextlib.suppress(NotFound):
                            node.runtime.remove(name, force=True)
            except grpc.aio.AioRpcError as exc:
                log.debug("%s: report stream broke: %s", node.name, exc.code())
            finally:
                sender.cancel()
                call.cancel()
        if node.alive:
            await asyncio.sleep(node.heartbeat)


def probe(node: HollowNode, targets: list[tuple[str, str]]) -> list[str]:
    """Call each target with this node's certificate; what each answered (status and
    details). A revoked caller must get UNAUTHENTICATED "certificate revoked" everywhere."""
    creds = grpc.ssl_channel_credentials(node.bundle, node.key_pem, node.chain_pem)
    out = []
    for address, _node_id in targets:
        with grpc.secure_channel(address, creds) as channel:
            try:
                node_pb2_grpc.NodeServiceStub(channel).GetNodeInfo(
                    node_pb2.NodeInfoRequest(), timeout=10
                )
                out.append("OK")
            except grpc.RpcError as exc:
                out.append(f"{exc.code().name}: {exc.details()}")
    return out


def _emit(**fields: object) -> None:
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


async def _commands(nodes: dict[str, HollowNode]) -> None:
    """Serve the driver: one JSON object per line on stdin, one answer per line.

    ``{"cmd": "kill", "names": [...]}`` stops those nodes at once (server and stream,
    as a crash would); ``{"cmd": "denied", "serial": S, "timeout": T}`` waits until
    every live node refuses S and answers the times; ``{"cmd": "probe", "name": N,
    "targets": [[addr, id], ...]}`` calls targets with N's certificate;
    ``{"cmd": "stats"}``; ``{"cmd": "quit"}``.
    """
    while True:
        line = await asyncio.to_thread(sys.stdin.readline)
        if not line:
            return
        msg = json.loads(line)
        cmd = msg["cmd"]
        if cmd == "kill":
            at = time.time()
            for name in msg["names"]:
                node = nodes[name]
                node.alive = False
                if node.reporter is not None:
                    node.reporter.cancel()
                node.server.stop(0)
            _emit(event="killed", at=at)
        elif cmd == "denied":
            serial, deadline = int(msg["serial"]), time.monotonic() + float(msg["timeout"])
            live = [n for n in nodes.values() if n.alive and n.serial != serial]
            while time.monotonic() < deadline and not all(serial in n.denied_at for n in live):
                await asyncio.sleep(0.05)
            _emit(
                event="denied",
                times={n.name: n.denied_at.get(serial) for n in live},
            )
        elif cmd == "probe":
            targets = [(str(a), str(i)) for a, i in msg["targets"]]
            answers = await asyncio.to_thread(probe, nodes[msg["name"]], targets)
            _emit(event="probe", answers=answers)
        elif cmd == "stats":
            _emit(
                event="stats",
                heartbeats=sum(n.heartbeats for n in nodes.values()),
                streams=sum(n.streams for n in nodes.values()),
                calls=sum(n.runtime.calls for n in nodes.values()),
                containers=sum(len(n.runtime.list()) for n in nodes.values() if n.alive),
            )
        elif cmd == "quit":
            return


# A hollow process's loop later than this leaves its nodes silent: logged, so that a
# benchmark's "declared dead" can be told from the orchestrator's mistake.
STALL = 0.5


async def _watch_stalls() -> None:
    while True:
        asked = time.monotonic()
        await asyncio.sleep(0.1)
        late = time.monotonic() - asked - 0.1
        if late > STALL:
            log.warning("hollow loop stalled %.2f s: its nodes sent nothing meanwhile", late)


async def main(args: argparse.Namespace) -> None:
    stalls = asyncio.create_task(_watch_stalls())
    names = args.names.split(",")
    hosts = args.hosts.split(",")
    tokens = Path(args.token_file).read_text().split()
    if not len(names) == len(hosts) == len(tokens):
        raise SystemExit("--names, --hosts and the token file must have as many entries")
    ca = Path(args.ca).read_bytes()
    root = Path(args.dir)
    # One pool serves every node's server: a hollow node is idle almost always.
    pool = futures.ThreadPoolExecutor(max_workers=args.workers, thread_name_prefix="hollow")
    joiners = futures.ThreadPoolExecutor(max_workers=args.join_parallel)
    loop = asyncio.get_running_loop()
    started = time.time()
    rng = random.Random(os.getpid())

    async def join_and_report(name: str, host: str, token: str) -> HollowNode:
        node = await loop.run_in_executor(
            joiners,
            lambda: join_one(
                name=name, host=host, token=token, join=args.join, ca=ca, root=root, pool=pool
            ),
        )
        # Reporting starts at once, as a real agent's does: a joined node that stays
        # silent for the grace period is (rightly) declared dead.
        node.reporter = asyncio.create_task(report(node, rng))
        return node

    joined = await asyncio.gather(
        *(join_and_report(n, h, t) for n, h, t in zip(names, hosts, tokens, strict=True))
    )
    joiners.shutdown()
    nodes = {n.name: n for n in joined}
    _emit(
        event="ready",
        seconds=time.time() - started,
        nodes=[
            {"name": n.name, "id": n.node_id, "address": n.address, "serial": n.serial}
            for n in joined
        ],
    )
    try:
        await _commands(nodes)
    finally:
        stalls.cancel()
        for node in nodes.values():
            node.alive = False
            if node.reporter is not None:
                node.reporter.cancel()
            node.server.stop(0)


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--join", required=True, help="HOST:PORT of the join endpoint")
    parser.add_argument("--token-file", required=True)
    parser.add_argument("--ca", required=True, help="the cluster's CA bundle (pinned by tokens)")
    parser.add_argument("--names", required=True)
    parser.add_argument("--hosts", required=True)
    parser.add_argument("--dir", required=True)
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument("--join-parallel", type=int, default=8)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(main(args))


if __name__ == "__main__":
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    cli()
