"""Content is pinned, not claimed (issue 10, item 2): a node is never believed about
images; sources are nodes the admin seeded or that received a verified copy."""

from __future__ import annotations

import io
import tarfile

from node.runtime.process import ProcessRuntime
from protos import control_pb2
from protos.wire.images import content_ref
from tests.waiting import wait_for

from .conftest import IMAGE, Cluster, application


def _poison(runtime: ProcessRuntime) -> None:
    """What a compromised node holds under the genuine image's name."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("bin/sleep")
        payload = b"#!/bin/sh\necho pwned > /tmp/pwned\n"
        info.size, info.mode = len(payload), 0o755
        tar.addfile(info, io.BytesIO(payload))
    runtime.import_rootfs(IMAGE, [buf.getvalue()])


def test_node_claiming_an_image_is_never_chosen_as_its_source(cluster: Cluster) -> None:
    # node-0 is compromised: it holds other content under the image's name and
    # reports it (name and digest), and sorts first by name. node-1 was seeded by the
    # admin with the genuine image.
    evil = cluster.join("node-0", "127.0.0.5", prepare=_poison)
    genuine = cluster.join("node-1", "127.0.0.2", image=True)
    target = cluster.join("node-2", "127.0.0.3", labels={"role": "target"})
    cluster.wait_ready("node-0", "node-1", "node-2")
    tracker = cluster.orch.orch.reconciler.tracker
    wait_for(lambda: tracker.has_image("node-0", IMAGE), what="node-0's claim recorded")
    pinned = cluster.pinned(genuine.runtime)
    assert evil.runtime.image_ids()[IMAGE] != pinned.split("@")[1]

    reply = cluster.orch.control().Apply(
        control_pb2.ApplyRequest(app=application(1, constraints={"role": "target"}))
    )
    assert reply.generation == 1
    wait_for(lambda: target.running() != [], what="the workload on node-2")
    # Pinned at apply, fetched from the seeded node only, and what runs is genuine.
    (w,) = cluster.workloads()
    assert w.image == pinned and w.node == "node-2"
    assert target.runtime.image_ids()[content_ref(pinned)] == genuine.runtime.image_ids()[IMAGE]
    assert IMAGE not in target.runtime.image_ids()
    issued = [e for e in cluster.audit() if e["event"] == "delegation.issued"]
    assert [(e["target"], e["source"], e["res"]) for e in issued] == [
        ("node-2", "node-1", pinned)
    ]
    # Nothing was ever asked of the claimant: no token presented, nothing refused.
    assert evil.node.agent.audit.entries() == []
    assert not any(e.get("aud") == evil.node_id for e in cluster.audit())


def test_image_with_no_verified_copy_is_fetched_from_nobody(cluster: Cluster) -> None:
    # Only the compromised node holds anything by that name: nothing is fetched from
    # it, the workload waits and says why.
    cluster.join("node-0", "127.0.0.5", prepare=_poison)
    target = cluster.join("node-2", "127.0.0.3", labels={"role": "target"})
    cluster.wait_ready("node-0", "node-2")
    tracker = cluster.orch.orch.reconciler.tracker
    wait_for(lambda: tracker.has_image("node-0", IMAGE), what="node-0's claim recorded")
    digest = "sha256:" + "ab" * 32
    app = application(1, constraints={"role": "target"})
    app.services[0].image = f"{IMAGE}@{digest}"  # pinned in the file
    cluster.orch.control().Apply(control_pb2.ApplyRequest(app=app))
    wait_for(
        lambda: any("verified copy" in w.message for w in cluster.workloads()),
        what="the workload to say it has no source",
    )
    assert not any(e["event"] == "delegation.issued" for e in cluster.audit())
    assert target.running() == [] and target.runtime.images() == []
