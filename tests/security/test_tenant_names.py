"""Everything a tenant owns is named by tenant on every node (issue 10, item 1): two
tenants applying the same application and volume names on one node share nothing."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from cryptography import x509

from pki.certs import thumbprint
from pki.tokenkeys import TokenKeyStore
from pki.tokens import mint, request_digest
from protos import control_pb2, node_pb2, node_pb2_grpc, ops, topology_pb2
from protos.wire.channel import client_credentials
from tests.waiting import wait_for

from .conftest import Cluster


def _app(tenant: str, command: str) -> control_pb2.ApplyRequest:
    return control_pb2.ApplyRequest(
        app=topology_pb2.Application(
            name="shop",
            tenant=tenant,
            services=[
                topology_pb2.Service(
                    name="db",
                    image="local/busybox:1",
                    command=["sh", "-c", command],
                    volumes=[topology_pb2.ServiceVolume(name="data", path="/data")],
                )
            ],
        )
    )


def _secret_files(volumes: Path) -> list[Path]:
    return sorted(volumes.glob("*/secret")) if volumes.is_dir() else []


def test_same_named_app_and_volume_of_another_tenant_cannot_read_its_data(
    cluster: Cluster,
) -> None:
    admin = cluster.admin()
    admin.Cordon(control_pb2.NodeRef(name="node-2"))  # both tenants on node-1
    # The process runtime links each mount into the instance's working directory.
    acme = cluster.orch.control("alice", "tenant:acme")
    globex = cluster.orch.control("gus", "tenant:globex")
    volumes = cluster.root / "node-1" / "volumes"
    acme.Apply(_app("acme", "echo acme-secret > data/secret; exec sleep 600"))
    wait_for(lambda: _secret_files(volumes), what="acme's secret written")
    globex.Apply(_app("globex", "cat data/secret; echo read-done; exec sleep 600"))
    runtime = cluster.nodes["node-1"].agent.runtime

    def globex_log() -> str:
        for c in runtime.list():
            if c.workload_id.startswith("globex."):
                return b"".join(runtime.logs(c.name)).decode(errors="replace")
        return ""

    wait_for(lambda: "read-done" in globex_log(), what="globex's read")
    assert "acme-secret" not in globex_log()
    # One volume per tenant, each named by its tenant; only acme's holds the secret.
    assert sorted(p.name for p in volumes.iterdir() if not p.name.startswith(".")) == [
        "acme.shop.data",
        "globex.shop.data",
    ]
    assert _secret_files(volumes) == [volumes / "acme.shop.data" / "secret"]


@pytest.mark.parametrize(
    ("name", "volume", "service"),
    [
        ("globex.shop.db.0.abc", "acme.shop.data", ""),  # another tenant's volume
        ("acme.other.db.0.abc", "acme.shop.data", ""),  # another application's volume
        ("evil", "acme.shop.data", ""),  # a name that says no owner
        ("acme.shop.db.0.abc", "data", ""),  # a volume that says no owner
        ("acme.shop.db.0.abc", "", "globex/shop/db"),  # posing as another tenant's service
    ],
)
def test_container_cannot_mount_a_volume_its_token_does_not_own(
    cluster: Cluster, name: str, volume: str, service: str
) -> None:
    # A genuine token for exactly this spec, minted by the orchestrator's own key:
    # even then the node refuses a mount outside the container's tenant and app.
    keys = TokenKeyStore.open(cluster.orch.orch.config.pki_dir / "token-keys")
    node = cluster.nodes["node-1"]
    spec = node_pb2.ContainerSpec(
        name=name,
        workload_id="acme.shop.db.0",
        image="local/busybox:1",
        command=["sleep", "60"],
        volumes=[node_pb2.VolumeMount(name=volume, path="/data")] if volume else [],
        service=service,
    )
    # The orchestrator's identity, with a certificate of the test's own.
    orch_name = cluster.orch.orch.identity.rsplit("/", 1)[1]
    issued = cluster.orch.authority.issue("orchestrator", orch_name)
    assert issued.key_pem is not None
    token = mint(
        keys.signer(),
        iss=cluster.orch.orch.identity,
        sub=cluster.orch.orch.identity,
        aud=node.node_id,
        op="container.create",
        res=name,
        cnf=thumbprint(x509.load_pem_x509_certificate(issued.chain_pem)),
        req=request_digest(ops.request_fields(spec)),
    )
    creds = client_credentials(
        issued.chain_pem, issued.key_pem, cluster.orch.authority.trust_bundle()
    )
    stub = node_pb2_grpc.NodeServiceStub(grpc.secure_channel(node.listening, creds))
    with pytest.raises(grpc.RpcError) as err:
        stub.CreateContainer(spec, metadata=(("authorization", f"Bearer {token}"),))
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert ("service" if service else "volume") in (err.value.details() or "")
    assert node.agent.runtime.list() == []
    assert not volume or not (cluster.root / "node-1" / "volumes" / volume).exists()
