"""Pool sandbox policies and tenant quotas: the admin's rules, in one place.

A pool's ``SandboxPolicy`` says what its instances may have beyond the sandbox's
defaults (host network, uid 0, capabilities given back, ports below 1024) and
whether its workloads may run on unisolated nodes. A pool without a record permits
nothing beyond the defaults. A service that asks for more than every pool it may be
placed in permits is refused at apply, naming the field; the scheduler never puts
an instance on a node whose pool does not permit what it asks (nor, unless the pool
accepts that, on an unisolated node).

A tenant's ``Quota`` bounds the cores, memory and instances its applications ask
for (replicas x resources, summed over every application). An apply that would
exceed it is refused naming the quota and what was asked; the autoscaler stops at
it (``autoscale.capped``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from orchestrator.errors import OrchestratorError
from orchestrator.store import Store, keys
from protos import control_pb2, node_pb2, topology_pb2
from protos.wire import rules

HOST_NETWORK = "host_network"
ROOT = "root"
LOW_PORTS = "low_ports"
UNISOLATED = "unisolated"
_CAP = "cap:"

POOLS_PREFIX = "/poolpolicies/"
QUOTAS_PREFIX = "/quotas/"
SHARED_KEY = "-shared"  # the shared pool's key segment ("" cannot be one)


class QuotaExceeded(OrchestratorError):
    """An apply or scale would take a tenant beyond its quota (RESOURCE_EXHAUSTED)."""


class PolicyRefused(OrchestratorError):
    """An application asks for more than its pool's sandbox policy permits
    (INVALID_ARGUMENT, naming the field)."""


def pool_key(pool: str) -> str:
    return POOLS_PREFIX + (keys.part(pool) if pool else SHARED_KEY)


def quota_key(tenant: str) -> str:
    return QUOTAS_PREFIX + keys.part(tenant)


def pool_name(pool: str) -> str:
    return pool or "shared"


def needs(service: topology_pb2.Service) -> frozenset[str]:
    """What ``service`` asks for beyond the sandbox's defaults."""
    out: set[str] = set()
    if service.network == topology_pb2.NETWORK_MODE_HOST:
        out.add(HOST_NETWORK)
    ids = rules.parse_user(service.user) if service.user else None
    if ids is not None and 0 in ids:
        out.add(ROOT)
    out.update(_CAP + c for c in service.cap_add)
    if any(0 < p.port < rules.LOW_PORT or 0 < p.publish < rules.LOW_PORT for p in service.ports):
        out.add(LOW_PORTS)  # binding one in its own namespace, or publishing one on the node
    return frozenset(out)


def grants(policy: node_pb2.SandboxPolicy | None) -> frozenset[str]:
    """What a policy permits, in the terms of ``needs`` (plus ``unisolated``)."""
    if policy is None:
        return frozenset()
    out = {_CAP + c for c in policy.cap_add}
    for flag, name in (
        (policy.host_network, HOST_NETWORK),
        (policy.root, ROOT),
        (policy.low_ports, LOW_PORTS),
        (policy.unisolated, UNISOLATED),
    ):
        if flag:
            out.add(name)
    return frozenset(out)


def _explain(service: str, need: str, pools: list[str]) -> str:
    names = [pool_name(p) for p in pools]
    where = f"in pool {names[0]}" if len(names) == 1 else f"in pools {' or '.join(names)}"
    if need == HOST_NETWORK:
        return f"services.{service}.network: host networking is not permitted {where}"
    if need == ROOT:
        return f"services.{service}.user: uid or gid 0 is not permitted {where}"
    if need == LOW_PORTS:
        return f"services.{service}.ports: ports below {rules.LOW_PORT} are not permitted {where}"
    return f"services.{service}.capAdd: {need.removeprefix(_CAP)} is not permitted {where}"


def eligible_pools(tenant: str, service: topology_pb2.Service) -> list[str]:
    """The pools a service's instances may be placed in (its own pool first)."""
    policy = service.placement.pool
    if policy == topology_pb2.POOL_POLICY_DEDICATED:
        return [tenant]
    if policy == topology_pb2.POOL_POLICY_SHARED:
        return [""]
    return [tenant, ""] if tenant else [""]


def node_spec_fields(service: topology_pb2.Service) -> dict[str, object]:
    """The sandbox fields of a node's ContainerSpec for an instance of ``service``."""
    return {
        "user": service.user,
        "seccomp": service.seccomp,
        "cap_add": list(service.cap_add),
        # Only its own declared ports: a low *published* port is the agent's to bind.
        "low_ports": any(0 < p.port < rules.LOW_PORT for p in service.ports),
    }


@dataclass
class Usage:
    cpu: float = 0.0
    memory: int = 0
    instances: int = 0

    def add_usage(self, other: Usage) -> None:
        self.cpu += other.cpu
        self.memory += other.memory
        self.instances += other.instances

    def describe(self) -> str:
        return f"{self.instances} instances, {self.cpu:g} cores, {self.memory} bytes"

    def add(self, service: topology_pb2.Service, replicas: int) -> None:
        self.cpu += service.resources.cpu * replicas
        self.memory += service.resources.memory * replicas
        self.instances += replicas


def app_usage(app: topology_pb2.Application, replicas: Callable[[str], int] | None = None) -> Usage:
    usage = Usage()
    for s in app.services:
        usage.add(s, replicas(s.name) if replicas is not None else s.replicas)
    return usage


def over_quota(quota: control_pb2.Quota, usage: Usage) -> list[str]:
    """Each limit of ``quota`` that ``usage`` exceeds, as "<what> <asked> > <quota>"."""
    over = []
    if quota.cpu and round(usage.cpu * 1000) > round(quota.cpu * 1000):
        over.append(f"cpu {usage.cpu:g} cores asked, quota {quota.cpu:g}")
    if quota.memory and usage.memory > quota.memory:
        over.append(f"memory {usage.memory} bytes asked, quota {quota.memory}")
    if quota.instances and usage.instances > quota.instances:
        over.append(f"instances {usage.instances} asked, quota {quota.instances}")
    return over


class Policies:
    """The pool policies and quotas, kept in the store and mirrored in memory."""

    def __init__(self, store: Store, *, clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._clock = clock
        self.pools: dict[str, node_pb2.SandboxPolicy] = {}
        self.quotas: dict[str, control_pb2.Quota] = {}

    async def load(self) -> None:
        self.pools.clear()
        self.quotas.clear()
        for e in await self._store.range(POOLS_PREFIX):
            rec = control_pb2.PoolPolicyRecord.FromString(e.value)
            self.pools[rec.pool] = rec.policy
        for e in await self._store.range(QUOTAS_PREFIX):
            quota = control_pb2.Quota.FromString(e.value)
            self.quotas[quota.tenant] = quota

    def pool(self, pool: str) -> node_pb2.SandboxPolicy:
        return self.pools.get(pool) or node_pb2.SandboxPolicy()

    async def set_pool(
        self, pool: str, policy: node_pb2.SandboxPolicy
    ) -> control_pb2.PoolPolicyRecord:
        for i, cap in enumerate(policy.cap_add):
            problem = rules.check_capability(cap)
            if problem:
                raise PolicyRefused(f"policy.cap_add[{i}]: {problem}")
        rec = control_pb2.PoolPolicyRecord(pool=pool, updated_at=self._clock())
        rec.policy.CopyFrom(policy)
        rec.policy.cap_add[:] = sorted(set(policy.cap_add))
        await self._store.put(pool_key(pool), rec.SerializeToString())
        self.pools[pool] = rec.policy
        return rec

    async def set_quota(self, quota: control_pb2.Quota) -> control_pb2.Quota:
        if quota.cpu < 0 or quota.memory < 0 or quota.instances < 0:
            raise PolicyRefused("quota: limits must not be negative (0 = no limit)")
        await self._store.put(quota_key(quota.tenant), quota.SerializeToString())
        self.quotas[quota.tenant] = control_pb2.Quota()
        self.quotas[quota.tenant].CopyFrom(quota)
        return quota

    def grants_of(self, pool: str) -> frozenset[str]:
        return grants(self.pools.get(pool))

    def check_app(self, app: topology_pb2.Application) -> None:
        """Refuse a service that asks for more than every pool it may use permits."""
        problems: list[str] = []
        for s in app.services:
            wanted = needs(s)
            if not wanted:
                continue
            pools = eligible_pools(app.tenant, s)
            if any(wanted <= self.grants_of(p) for p in pools):
                continue
            # What no eligible pool permits; the rest some pool does (alone, not together).
            missing = sorted(n for n in wanted if not any(n in self.grants_of(p) for p in pools))
            if not missing:
                missing = sorted(wanted - self.grants_of(pools[0]))
            problems.extend(_explain(s.name, need, pools) for need in missing)
        if problems:
            raise PolicyRefused("; ".join(problems))

    def check_quota(self, tenant: str, usage: Usage, asked: str) -> None:
        quota = self.quotas.get(tenant)
        if quota is None:
            return
        over = over_quota(quota, usage)
        if over:
            raise QuotaExceeded(f"quota of tenant {tenant} exceeded by {asked}: " + "; ".join(over))


def tenant_usage(
    apps: Iterable[control_pb2.AppRecord], tenant: str, *, skip: str | None = None
) -> Usage:
    """What a tenant's applications ask for (autoscaled counts included); ``skip``
    leaves one application out (the one being re-applied)."""
    usage = Usage()
    for rec in apps:
        if rec.app.tenant != tenant or rec.app.name == skip or rec.deleting:
            continue
        for s in rec.app.services:
            usage.add(s, rec.autoscaled.get(s.name, s.replicas))
    return usage
