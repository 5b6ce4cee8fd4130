"""A moved volume carries the digest its source computed at export, checked before the
receiving node replaces its copy (issue 10, item 2): a compromised source (its own key
and certificate, attacker code) sending a stream that does not match cannot replace
anything."""

from __future__ import annotations

import hashlib
import io
import tarfile
from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc
import pytest

from node.volumes import VolumeStore
from protos import node_pb2, node_pb2_grpc
from tests.waiting import wait_for

from .conftest import Cluster

VOLUME = "default.shop.data"


def _tar(payload: bytes) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("orders.json")
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))
    return buf.getvalue()


class _Hostile(node_pb2_grpc.NodeServiceServicer):  # type: ignore[misc]
    """Attacker code answering with node-1's own certificate."""

    def __init__(self, digest: str | None) -> None:
        self.digest = digest

    def ExportVolume(self, request: Any, context: Any) -> Iterator[node_pb2.DataChunk]:
        data = _tar(b'{"total": 0}')
        yield node_pb2.DataChunk(data=data)
        if self.digest is not None:
            yield node_pb2.DataChunk(digest=self.digest)


@pytest.mark.parametrize(
    "digest",
    [None, "sha256:" + hashlib.sha256(_tar(b'{"total": 42}')).hexdigest(), "sha256:" + "0" * 64],
    ids=["no digest", "digest of other data", "garbage digest"],
)
def test_volume_stream_not_matching_its_sources_digest_replaces_nothing(
    cluster: Cluster, digest: str | None
) -> None:
    n1 = cluster.join("node-1", "127.0.0.2")
    n2 = cluster.join("node-2", "127.0.0.3")
    cluster.wait_ready("node-1", "node-2")
    mine = VolumeStore.for_state_dir(n2.state_dir).create(VOLUME)
    (mine / "orders.json").write_text('{"total": 42}')
    # node-1 is compromised: its agent gives way to attacker code serving on its
    # address with its own key and certificate.
    address = n1.address
    files = n1.node.joined.files
    n1.node.stop(0)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    node_pb2_grpc.add_NodeServiceServicer_to_server(_Hostile(digest), server)
    server.add_secure_port(
        address,
        grpc.ssl_server_credentials(
            [(files.key.read_bytes(), files.cert.read_bytes())],
            root_certificates=files.ca.read_bytes(),
            require_client_auth=True,
        ),
    )
    server.start()
    try:
        state = cluster.orch.orch.state
        delegator = cluster.orch.orch.reconciler.delegator
        assert delegator is not None
        cluster.orch.run(
            delegator.fetch(
                kind="volume.fetch",
                resource=VOLUME,
                workload="default.shop.db.0",
                target=state.node("node-2"),  # type: ignore[arg-type]
                source=state.node("node-1"),  # type: ignore[arg-type]
            )
        )
        wait_for(lambda: len(n2.node.tasks.outcomes) == 1, what="the volume fetch")
    finally:
        server.stop(0)
    outcome = n2.node.tasks.outcomes[0]
    assert not outcome.ok and outcome.completed
    assert "digest" in outcome.message
    # The volume is exactly as it was: same content, nothing added.
    assert sorted(p.name for p in mine.iterdir()) == ["orders.json"]
    assert (mine / "orders.json").read_text() == '{"total": 42}'
    done = [e for e in cluster.audit() if e["event"] == "task.completed"]
    assert [(e["node"], e["res"], e["ok"]) for e in done] == [("node-2", VOLUME, False)]
