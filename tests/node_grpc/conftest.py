"""A real node agent on 127.0.0.1:0 over real mTLS, with a real PKI and token keys."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest

from node.config import NodeConfig
from node.runtime import select_runtime
from node.server import NodeAgent, build_agent
from pki.authority import Authority, Issued
from pki.files import atomic_write
from pki.tokenkeys import TokenKeyStore
from pki.tokens import mint, request_digest
from protos import node_pb2_grpc, ops
from protos.wire.channel import client_credentials
from tests.waiting import FakeClock

TD = "test.capstan"


@dataclass
class Cluster:
    root: Path
    authority: Authority
    keys: TokenKeyStore
    ids: dict[str, Issued] = field(default_factory=dict)
    jwks_path: Path = Path()
    deny_path: Path = Path()

    @property
    def orchestrator_id(self) -> str:
        return self.ids["orch"].identity.uri

    def files(self, name: str) -> tuple[Path, Path, Path]:
        d = self.root / "certs"
        return d / f"{name}.crt", d / f"{name}.key", d / "ca.crt"

    def credentials(self, name: str) -> grpc.ChannelCredentials:
        crt, key, ca = self.files(name)
        return client_credentials(crt.read_bytes(), key.read_bytes(), ca.read_bytes())

    def token(
        self,
        caller: str,
        aud: str,
        op: str,
        res: str,
        *,
        req: str | None = None,
        ttl: float = 60,
        now: float | None = None,
        epoch: int = 0,
        signer_store: TokenKeyStore | None = None,
    ) -> str:
        issued = self.ids[caller]
        return mint(
            (signer_store or self.keys).signer(),
            iss=self.orchestrator_id,
            sub=issued.identity.uri,
            aud=aud,
            op=op,
            res=res,
            cnf=issued.thumbprint,
            req=req,
            ttl=ttl,
            now=now,
            epoch=epoch,
        )

    def write_jwks(self) -> None:
        self.jwks_path.write_text(json.dumps(self.keys.jwks()))

    def write_deny(self, text: str) -> None:
        """Replace the nodes' deny list as a node's own trust update does (atomic_write):
        it counts from the next call. (Written by another process, it counts within
        ``node.server.TRUST_FILE_CHECK`` of the node's clock.)"""
        atomic_write(self.deny_path, text.encode())


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Cluster:
    root = tmp_path_factory.mktemp("cluster")
    authority = Authority.init(root / "pki", TD)
    keys = TokenKeyStore.open(root / "pki" / "token-keys")
    c = Cluster(root, authority, keys, jwks_path=root / "jwks.json", deny_path=root / "deny.txt")
    (root / "certs").mkdir()
    for kind, name, role in (
        ("orchestrator", "orch", None),
        ("node", "node-a", None),
        ("node", "node-b", None),
        ("user", "alice", "admin"),
    ):
        issued = authority.issue(
            kind,
            name,
            dns=["localhost"] if kind != "user" else [],
            ips=["127.0.0.1"] if kind != "user" else [],
            role=role,
        )
        authority.write_issued(issued, root / "certs")
        c.ids[name] = issued
    c.write_jwks()
    c.deny_path.write_text("")
    # A second, unrelated CA whose certificates must never get in.
    evil = Authority.init(root / "evil-pki", TD)
    (root / "evil").mkdir()
    mallory = evil.issue("orchestrator", "orch", dns=["localhost"], ips=["127.0.0.1"])
    evil.write_issued(mallory, root / "evil")
    c.ids["evil-orch"] = mallory
    return c


@dataclass
class Node:
    agent: NodeAgent
    clock: FakeClock
    cluster: Cluster
    target: str

    @property
    def id(self) -> str:
        return self.agent.node_id

    def stub(self, caller: str = "orch") -> node_pb2_grpc.NodeServiceStub:
        channel = grpc.secure_channel(self.target, self.cluster.credentials(caller))
        return node_pb2_grpc.NodeServiceStub(channel)

    def token(self, op: str, res: str, caller: str = "orch", **kw: object) -> str:
        kw.setdefault("now", self.clock())
        return self.cluster.token(caller, self.id, op, res, **kw)  # type: ignore[arg-type]

    def create_token(self, spec: object, caller: str = "orch") -> str:
        return self.token(
            "container.create",
            spec.name,
            caller,  # type: ignore[attr-defined]
            req=request_digest(ops.request_fields(spec)),
        )  # type: ignore[arg-type]


def meta(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


def start_node(cluster: Cluster, tmp: Path, runtime_kind: str, name: str = "node-a") -> Node:
    crt, key, ca = cluster.files(name)
    cfg = NodeConfig.load(
        None,
        listen="127.0.0.1:0",
        cert=crt,
        key=key,
        ca=ca,
        jwks=cluster.jwks_path,
        deny_list=cluster.deny_path,
        state_dir=tmp / f"{name}-state",
        runtime=runtime_kind,
        issuers=[cluster.orchestrator_id],
    )
    clock = FakeClock(time.time())
    runtime = select_runtime(runtime_kind, cluster.ids[name].identity.uri, cfg.state_dir)
    for leftover in runtime.list():  # a crashed earlier run on the shared engine
        runtime.remove(leftover.name, force=True)
    if runtime_kind == "process":
        from node.runtime.process import ensure_busybox_image

        ensure_busybox_image(runtime)  # type: ignore[arg-type]
    else:
        runtime.adopt_image("local/busybox:1")  # type: ignore[attr-defined]
    agent = build_agent(cfg, runtime=runtime, clock=clock)
    return Node(agent, clock, cluster, f"127.0.0.1:{agent.port}")


@pytest.fixture
def process_node(cluster: Cluster, tmp_path: Path) -> Iterator[Node]:
    node = start_node(cluster, tmp_path, "process")
    yield node
    for c in node.agent.runtime.list():
        node.agent.runtime.remove(c.name, force=True)
    node.agent.stop(0)


@pytest.fixture(params=["process", pytest.param("docker", marks=pytest.mark.docker)])
def any_node(request: pytest.FixtureRequest, cluster: Cluster, tmp_path: Path) -> Iterator[Node]:
    if request.param == "docker":
        request.getfixturevalue("busybox_image")
    node = start_node(cluster, tmp_path, request.param)
    yield node
    for c in node.agent.runtime.list():
        node.agent.runtime.remove(c.name, force=True)
    node.agent.stop(0)
