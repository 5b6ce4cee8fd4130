"""Publishing below port 1024 is the node's own low port: refused unless the admin's
pool policy permits low ports, at apply (naming the field, nothing applied) and by
the node itself whatever the token says. Host networking is refused the same way
(tests/control_api/test_sandbox_policy.py)."""

from __future__ import annotations

import grpc
import pytest

from node.errors import PolicyDenied
from node.policy import NodePolicy
from node.runtime.base import ContainerSpec, PortSpec
from orchestrator.policy import LOW_PORTS, needs, node_spec_fields
from protos import control_pb2, node_pb2, topology_pb2
from tests.control_api.conftest import Running


def web(publish: int) -> topology_pb2.Service:
    return topology_pb2.Service(
        name="web",
        image="local/busybox:1",
        command=["sleep", "60"],
        replicas=1,
        ports=[topology_pb2.ServicePort(port=8080, publish=publish)],
    )


def test_a_low_published_port_needs_the_low_ports_permission() -> None:
    assert LOW_PORTS in needs(web(80))
    assert LOW_PORTS not in needs(web(18080))
    # The instance itself binds 8080: it is not given low ports in its namespace.
    assert node_spec_fields(web(80))["low_ports"] is False


def test_apply_publishing_below_1024_is_refused_until_the_pool_permits(
    orchestrator: Running,
) -> None:
    admin = orchestrator.control()
    request = control_pb2.ApplyRequest(
        app=topology_pb2.Application(name="shop", tenant="acme", services=[web(80)])
    )
    with pytest.raises(grpc.RpcError) as err:
        admin.Apply(request)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "services.web.ports: ports below 1024 are not permitted" in (err.value.details() or "")
    assert not admin.ListWorkloads(control_pb2.WorkloadFilter()).workloads  # nothing applied
    admin.SetPoolPolicy(
        control_pb2.PoolPolicyRecord(pool="acme", policy=node_pb2.SandboxPolicy(low_ports=True))
    )
    assert admin.Apply(request).generation == 1


def test_the_node_refuses_a_low_published_port_its_policy_does_not_permit() -> None:
    spec = ContainerSpec(
        name="web-0",
        workload_id="acme.shop.web.0",
        image="local/busybox:1",
        service="acme/shop/web",
        ports=(PortSpec(8080, 443),),
    )
    with pytest.raises(PolicyDenied) as err:
        NodePolicy().check(spec)
    assert err.value.field == "ports[0].publish"
    NodePolicy(low_ports=True).check(spec)  # an admin permitted it
    NodePolicy().check(ContainerSpec(**{**spec.__dict__, "ports": (PortSpec(8080, 18080),)}))
