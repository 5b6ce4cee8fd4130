"""A node's labels, pool and capacity are the admin's word, not the node's (issue 10,
item 9): a node cannot attract workloads by what it says of itself."""

from __future__ import annotations

import grpc
import pytest

from protos import control_pb2, topology_pb2
from tests.waiting import wait_for

from .conftest import Cluster, join_node

GI = 1 << 30


def _app(name: str, **service: object) -> control_pb2.ApplyRequest:
    return control_pb2.ApplyRequest(
        app=topology_pb2.Application(
            name=name,
            services=[
                topology_pb2.Service(
                    name="web", image="local/busybox:1", command=["sleep", "600"], **service
                )
            ],
        )
    )


def test_node_cannot_attract_workloads_by_its_own_labels_or_capacity(cluster: Cluster) -> None:
    join_node(
        cluster,
        "node-3",
        "127.0.0.23",
        grant=control_pb2.JoinTokenRequest(labels={"zone": "a"}, cpus=1.0, memory=1 * GI),
        claims={"labels": {"disk": "ssd", "zone": "b"}, "cpus": 64.0, "memory": 1024 * GI},
    )
    admin = cluster.admin()
    record = next(
        n for n in admin.ListNodes(control_pb2.ListNodesRequest()).nodes if n.name == "node-3"
    )
    assert dict(record.labels) == {"zone": "a"}
    assert record.cpus == 1.0 and record.memory == 1 * GI and record.pool == ""
    wait_for(
        lambda: all(
            n.state == "ready" for n in admin.ListNodes(control_pb2.ListNodesRequest()).nodes
        ),
        what="node-3 ready",
    )
    # Labels it gave itself attract nothing; nor does the capacity it claimed: the
    # apply is refused whole and nothing is written.
    for request in (
        _app("ssd", placement=topology_pb2.Placement(constraints={"disk": "ssd"})),
        _app("big", resources=topology_pb2.Resources(cpu=8.0)),
    ):
        with pytest.raises(grpc.RpcError) as err:
            admin.Apply(request)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "fits no node" in (err.value.details() or "")
    assert cluster.workloads() == []
    assert cluster.nodes["node-3"].agent.runtime.list() == []
    # The admin's own labels do attract.
    admin.Apply(_app("zoned", placement=topology_pb2.Placement(constraints={"zone": "a"})))
    wait_for(
        lambda: any(w.app == "zoned" and w.node == "node-3" for w in cluster.workloads()),
        what="zoned placed on node-3",
    )


@pytest.mark.parametrize(
    "bad",
    [
        control_pb2.JoinTokenRequest(cpus=float("nan")),
        control_pb2.JoinTokenRequest(cpus=-1.0),
        control_pb2.JoinTokenRequest(memory=-1),
    ],
)
def test_join_token_with_a_bad_capacity_is_refused(
    cluster: Cluster, bad: control_pb2.JoinTokenRequest
) -> None:
    with pytest.raises(grpc.RpcError) as err:
        cluster.admin().CreateJoinToken(bad)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
