"""Pool sandbox policies and tenant quotas over the real ControlService (mTLS):
only an admin sets them; an apply asking more than its pool permits is refused
naming the field; an apply over quota is refused naming the quota and the ask;
nothing is written when refused."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest

from orchestrator.policy import Policies, needs
from orchestrator.store.sqlite import SqliteStore
from protos import control_pb2, node_pb2, topology_pb2

from .conftest import Running

MiB = 1 << 20


def service(name: str = "web", **fields: object) -> topology_pb2.Service:
    values: dict[str, object] = {"replicas": 2}
    values.update(fields)
    return topology_pb2.Service(
        name=name, image="local/busybox:1", command=["sleep", "60"],
        resources=topology_pb2.Resources(cpu=0.5, memory=64 * MiB), **values,  # type: ignore[arg-type]
    )


def app(*services: topology_pb2.Service, tenant: str = "acme") -> topology_pb2.Application:
    return topology_pb2.Application(name="shop", tenant=tenant, services=list(services))


def refused(fn: object, request: object) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as err:
        fn(request)  # type: ignore[operator]
    return err.value


def workloads(orch: Running) -> list[str]:
    stub = orch.control()
    return [w.id for w in stub.ListWorkloads(control_pb2.WorkloadFilter()).workloads]


def test_apply_asking_more_than_the_pool_permits_is_refused_naming_fields(
    orchestrator: Running,
) -> None:
    admin = orchestrator.control()
    asking = app(
        service("web", network=topology_pb2.NETWORK_MODE_HOST,
                ports=[topology_pb2.ServicePort(port=80)]),
        service("db", user="0", cap_add=["NET_ADMIN"]),
    )
    err = refused(admin.Apply, control_pb2.ApplyRequest(app=asking))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = err.details() or ""
    for field in ("services.web.network", "services.web.ports", "services.db.user",
                  "services.db.capAdd: NET_ADMIN"):
        assert field in details, details
    assert "pools acme or shared" in details
    assert workloads(orchestrator) == []  # nothing applied

    # The admin permits it for the tenant's pool: the same apply goes through.
    admin.SetPoolPolicy(control_pb2.PoolPolicyRecord(pool="acme", policy=node_pb2.SandboxPolicy(
        host_network=True, low_ports=True, root=True, cap_add=["NET_ADMIN"])))
    reply = admin.Apply(control_pb2.ApplyRequest(app=asking))
    assert reply.generation == 1
    listed = {p.pool: p.policy for p in admin.ListPoolPolicies(
        control_pb2.ListPoolPoliciesRequest()).pools}
    assert listed["acme"].host_network and list(listed["acme"].cap_add) == ["NET_ADMIN"]
    assert listed[""] == node_pb2.SandboxPolicy()  # the shared pool: defaults only


def test_a_dedicated_service_is_judged_by_its_own_pool_only(orchestrator: Running) -> None:
    admin = orchestrator.control()
    admin.SetPoolPolicy(control_pb2.PoolPolicyRecord(
        pool="", policy=node_pb2.SandboxPolicy(host_network=True)))
    shared_ok = service("web", network=topology_pb2.NETWORK_MODE_HOST)
    admin.Apply(control_pb2.ApplyRequest(app=app(shared_ok)))  # may use the shared pool
    dedicated = service("web", network=topology_pb2.NETWORK_MODE_HOST,
                        placement=topology_pb2.Placement(
                            pool=topology_pb2.POOL_POLICY_DEDICATED))
    err = refused(admin.Apply, control_pb2.ApplyRequest(app=app(dedicated, tenant="globex")))
    assert "services.web.network: host networking is not permitted in pool globex" in (
        err.details() or "")


def test_only_an_admin_sets_policies_and_quotas(orchestrator: Running) -> None:
    tenant = orchestrator.control("ann", "tenant:acme")
    viewer = orchestrator.control("vera", "viewer")
    for stub in (tenant, viewer):
        err = refused(stub.SetPoolPolicy, control_pb2.PoolPolicyRecord(
            pool="acme", policy=node_pb2.SandboxPolicy(root=True)))
        assert err.code() == grpc.StatusCode.PERMISSION_DENIED
        err = refused(stub.SetQuota, control_pb2.Quota(tenant="acme", instances=1000))
        assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    admin = orchestrator.control()
    pools = admin.ListPoolPolicies(control_pb2.ListPoolPoliciesRequest()).pools
    assert all(p.policy == node_pb2.SandboxPolicy() for p in pools)  # nothing changed
    assert not admin.DescribeTenant(control_pb2.TenantRef(tenant="acme")).HasField("quota")
    # A tenant sees its own use, not another tenant's.
    err = refused(tenant.DescribeTenant, control_pb2.TenantRef(tenant="globex"))
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED


def test_a_capability_no_policy_can_grant_is_refused(orchestrator: Running) -> None:
    admin = orchestrator.control()
    err = refused(admin.SetPoolPolicy, control_pb2.PoolPolicyRecord(
        pool="acme", policy=node_pb2.SandboxPolicy(cap_add=["SYS_ADMIN"])))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "policy.cap_add[0]" in (err.details() or "")


def test_apply_over_quota_is_refused_naming_quota_and_ask(orchestrator: Running) -> None:
    admin = orchestrator.control()
    admin.SetQuota(control_pb2.Quota(tenant="acme", cpu=2, memory=512 * MiB, instances=3))
    admin.Apply(control_pb2.ApplyRequest(app=app(service("web"))))  # 2 instances, 1 core
    usage = admin.DescribeTenant(control_pb2.TenantRef(tenant="acme"))
    assert (usage.instances, usage.cpu, usage.memory) == (2, 1.0, 128 * MiB)
    assert usage.quota.instances == 3

    bigger = app(service("web", replicas=5))  # a scale to 5: 5 instances, 2.5 cores
    err = refused(admin.Apply, control_pb2.ApplyRequest(app=bigger))
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    details = err.details() or ""
    assert "quota of tenant acme" in details
    assert "instances 5 asked, quota 3" in details
    assert "cpu 2.5 cores asked, quota 2" in details
    assert len(workloads(orchestrator)) == 2  # nothing changed

    # Another application of the same tenant counts too.
    other = topology_pb2.Application(name="blog", tenant="acme", services=[service("web")])
    err = refused(admin.Apply, control_pb2.ApplyRequest(app=other))
    assert "instances 4 asked, quota 3" in (err.details() or "")
    # Another tenant has no quota.
    admin.Apply(control_pb2.ApplyRequest(app=app(service("web", replicas=5), tenant="globex")))


def test_policies_survive_a_reload(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with SqliteStore(tmp_path / "store.db") as store:
            first = Policies(store)
            await first.set_pool("acme", node_pb2.SandboxPolicy(root=True, cap_add=["CHOWN"]))
            await first.set_quota(control_pb2.Quota(tenant="acme", instances=4))
            again = Policies(store)
            await again.load()
            assert again.pool("acme").root and list(again.pool("acme").cap_add) == ["CHOWN"]
            assert again.quotas["acme"].instances == 4
            assert again.pool("globex") == node_pb2.SandboxPolicy()

    asyncio.run(scenario())


def test_needs_of_a_service() -> None:
    assert needs(service()) == frozenset()
    assert needs(service(user="1000:0")) == {"root"}  # gid 0 counts as root
    assert needs(service(user="1000")) == frozenset()
    assert needs(service(ports=[topology_pb2.ServicePort(port=1024)])) == frozenset()
    assert needs(service(ports=[topology_pb2.ServicePort(port=443)])) == {"low_ports"}
