"""The orchestrator's streams end with their grant and are limited per peer (issue 10
items 4 and 6): a node's Watch and Report, held by the node's certificate.

Waiting is for the stream to end (an event), never a fixed sleep.
"""

from __future__ import annotations

import threading
from typing import Any

import grpc

from protos import control_pb2, gateway_pb2
from tests.waiting import wait_for

from .conftest import Cluster


def _drain(call: Any) -> tuple[threading.Event, list[grpc.RpcError]]:
    ended = threading.Event()
    errors: list[grpc.RpcError] = []

    def run() -> None:
        try:
            for _ in call:
                pass
        except grpc.RpcError as exc:
            errors.append(exc)
        ended.set()

    threading.Thread(target=run, daemon=True).start()
    return ended, errors


def test_a_watch_stream_ends_when_its_nodes_certificate_is_revoked(cluster: Cluster) -> None:
    # Before: a node's Watch kept streaming assignments after its certificate was
    # revoked, for as long as the node kept the stream open.
    stub = cluster.as_node("node-2")
    watch = stub.Watch(gateway_pb2.WatchRequest(node="node-2"))
    first = next(watch)  # the stream is open and authorized
    assert first is not None
    ended, errors = _drain(watch)
    assert not ended.wait(0.5), "the stream ended while the certificate was good"
    cluster.admin().RevokeNode(control_pb2.RevokeNodeRequest(name="node-2"))
    assert ended.wait(30)
    assert [(e.code(), e.details()) for e in errors] == [
        (grpc.StatusCode.UNAUTHENTICATED, "certificate revoked")
    ]
    gate = cluster.orch.orch.authz
    assert gate is not None
    wait_for(lambda: gate.open_streams("spiffe://orch.test/node/node-2") == 0, what="released")


def test_one_nodes_flood_of_watch_streams_is_capped_and_others_still_answer(
    cluster: Cluster,
) -> None:
    stub = cluster.as_node("node-2")
    gate = cluster.orch.orch.authz
    assert gate is not None
    uri = "spiffe://orch.test/node/node-2"
    wait_for(lambda: gate.open_streams(uri) == 1, what="node-2's own report stream")
    free = gate.streams_per_peer - 1
    calls = [stub.Watch(gateway_pb2.WatchRequest(node="node-2")) for _ in range(free + 12)]
    outcomes: list[object] = []
    lock = threading.Lock()

    def first(call: Any) -> None:
        try:
            next(call)
            got: object = "open"
        except grpc.RpcError as exc:
            got = exc.code()
        with lock:
            outcomes.append(got)

    readers = [threading.Thread(target=first, args=(c,), daemon=True) for c in calls]
    try:
        for r in readers:
            r.start()
        for r in readers:
            r.join(timeout=30)
        assert outcomes.count("open") == free
        assert outcomes.count(grpc.StatusCode.RESOURCE_EXHAUSTED) == 12
        # Another peer is not held up by that node's streams.
        nodes = cluster.admin().ListNodes(control_pb2.ListNodesRequest(), timeout=10).nodes
        assert {n.name for n in nodes} == {"node-1", "node-2"}
        refused = [e for e in cluster.audit() if e.get("event") == "stream.refused"]
        assert len(refused) == 12 and {e["peer"] for e in refused} == {uri}
    finally:
        for c in calls:
            c.cancel()
    wait_for(lambda: gate.open_streams(uri) == 1, what="the watches released")


def test_health_watch_streams_without_a_certificate_are_capped_per_source(
    cluster: Cluster,
) -> None:
    # The join port asks for no certificate: Health Watch streams are counted per
    # source address, so one host cannot open them without bound.
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    creds = grpc.ssl_channel_credentials(cluster.orch.authority.trust_bundle())
    channel = grpc.secure_channel(cluster.orch.join_target, creds)
    health = health_pb2_grpc.HealthStub(channel)
    gate = cluster.orch.orch.authz
    assert gate is not None
    calls = [health.Watch(health_pb2.HealthCheckRequest()) for _ in range(20)]
    outcomes: list[object] = []
    for call in calls:
        try:
            outcomes.append(next(call).status)
        except grpc.RpcError as exc:
            outcomes.append(exc.code())
    try:
        serving = outcomes.count(health_pb2.HealthCheckResponse.SERVING)
        assert serving == gate.streams_per_peer
        assert outcomes.count(grpc.StatusCode.RESOURCE_EXHAUSTED) == 20 - serving
    finally:
        for call in calls:
            call.cancel()
        channel.close()
    wait_for(lambda: gate.public_streams == {}, what="the watches released")
