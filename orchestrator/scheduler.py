"""Placement: which node gets one instance of a service. Pure functions, no I/O.

A node is refused by the first filter it fails, in this order: not ready, cordoned,
draining, tenant pool, label constraints, host ports, cpu, memory. The survivors are
scored by the service's strategy and ties go to the smallest node id, so the same
inputs always give the same answer.

Tenant pools: a node with ``pool=None`` is shared; a node with ``pool="acme"``
belongs to tenant acme and never runs anyone else's workloads (nor workloads
without a tenant).

Capacity is compared in millicores and bytes (integers), so 0.1 + 0.2 cores fit in
0.3 free cores.
"""

from __future__ import annotations

import dataclasses
import functools
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from orchestrator import policy
from orchestrator.errors import Unschedulable
from protos import topology_pb2 as pb

__all__ = [
    "NodeView",
    "PlacementRequest",
    "PoolPolicy",
    "Strategy",
    "Unschedulable",
    "assign",
    "check_fits",
    "fits_some_node",
    "place",
    "place_many",
    "request_for",
    "service_key",
]


class Strategy(StrEnum):
    SPREAD = "spread"  # fewest instances of the service, then least allocated
    BINPACK = "binpack"  # most allocated node that still fits


class PoolPolicy(StrEnum):
    ANY = "any"  # the tenant's own pool or the shared pool
    DEDICATED = "dedicated"  # the tenant's own pool only
    SHARED = "shared"  # the shared pool only


# Refusal reasons, one per filter (the text of Unschedulable's summary).
NOT_READY = "not ready"
CORDONED = "cordoned"
DRAINING = "draining"
OTHER_TENANT = "in another tenant's pool"
NOT_DEDICATED = "not in the tenant's own pool"
NOT_SHARED = "not in the shared pool"
LABELS = "labels do not match"
UNISOLATED = "unisolated node, its pool does not accept that"
SANDBOX = "its sandbox policy (its pool's, within what it was given at join) does not permit it"
PORTS = "host port in use"
CPU = "insufficient cpu"
MEMORY = "insufficient memory"


@dataclass(frozen=True)
class NodeView:
    """What the scheduler knows of a node. ``allocated_*`` and ``instances_by_service``
    count what is already placed there (including instances not yet running)."""

    id: str
    labels: Mapping[str, str] = field(default_factory=dict)
    pool: str | None = None  # owning tenant, None = shared
    cpu: float = 0.0  # cores
    memory: int = 0  # bytes
    allocated_cpu: float = 0.0
    allocated_memory: int = 0
    cordoned: bool = False
    draining: bool = False
    ready: bool = True
    instances_by_service: Mapping[str, int] = field(default_factory=dict)
    used_ports: frozenset[tuple[str, int]] = frozenset()  # (protocol, port) on the host
    # What its pool's sandbox policy permits (orchestrator.policy terms); None = the
    # policy is not considered (unit tests of the other filters).
    grants: frozenset[str] | None = None
    unisolated: bool = False  # its process runtime cannot sandbox instances

    # In millicores, worked out once per view: a placement compares them for every
    # node it looks at (64 per instance, 10,000 instances in a large apply).
    @functools.cached_property
    def cpu_millis(self) -> int:
        return _millis(self.cpu)

    @functools.cached_property
    def allocated_millis(self) -> int:
        return _millis(self.allocated_cpu)


@dataclass(frozen=True)
class PlacementRequest:
    """One instance to place. ``service`` is the service key (``tenant/app/service``)."""

    service: str
    cpu: float = 0.0
    memory: int = 0
    constraints: Mapping[str, str] = field(default_factory=dict)
    strategy: Strategy = Strategy.SPREAD
    tenant: str | None = None
    pool: PoolPolicy = PoolPolicy.ANY
    ports: frozenset[tuple[str, int]] = frozenset()
    needs: frozenset[str] = frozenset()  # beyond the sandbox's defaults (orchestrator.policy)

    @functools.cached_property
    def cpu_millis(self) -> int:
        return _millis(self.cpu)


def _millis(cores: float) -> int:
    return round(cores * 1000)


def _pool_refusal(request: PlacementRequest, node: NodeView) -> str | None:
    if node.pool is not None and node.pool != request.tenant:
        return OTHER_TENANT
    if request.pool is PoolPolicy.DEDICATED and node.pool is None:
        return NOT_DEDICATED
    if request.pool is PoolPolicy.SHARED and node.pool is not None:
        return NOT_SHARED
    return None


def _static_refusal(request: PlacementRequest, node: NodeView, *, free: bool) -> str | None:
    """Pool, labels, ports and capacity; against free capacity or (``free=False``) total."""
    reason = _pool_refusal(request, node)
    if reason:
        return reason
    if node.grants is not None:
        if node.unisolated and "unisolated" not in node.grants:
            return UNISOLATED
        if not request.needs <= node.grants:
            return SANDBOX
    if request.constraints and any(
        node.labels.get(k) != v for k, v in request.constraints.items()
    ):
        return LABELS
    if free and request.ports and request.ports & node.used_ports:
        return PORTS
    cpu_left = node.cpu_millis - (node.allocated_millis if free else 0)
    if request.cpu_millis > cpu_left:
        return CPU
    memory_left = node.memory - (node.allocated_memory if free else 0)
    if request.memory > memory_left:
        return MEMORY
    return None


def _refusal(request: PlacementRequest, node: NodeView) -> str | None:
    if not node.ready:
        return NOT_READY
    if node.cordoned:
        return CORDONED
    if node.draining:
        return DRAINING
    return _static_refusal(request, node, free=True)


def _load_after(request: PlacementRequest, node: NodeView) -> float:
    """Mean of cpu and memory allocation fractions once the instance is placed."""
    cap_cpu = node.cpu_millis
    cpu = (node.allocated_millis + request.cpu_millis) / cap_cpu if cap_cpu else 0.0
    mem = (node.allocated_memory + request.memory) / node.memory if node.memory else 0.0
    return (cpu + mem) / 2


def _score(request: PlacementRequest, node: NodeView) -> tuple[float, float, str]:
    """Sort key: the smallest wins."""
    load = _load_after(request, node)
    if request.strategy is Strategy.BINPACK:
        return (0.0, -load, node.id)
    return (float(node.instances_by_service.get(request.service, 0)), load, node.id)


def place(
    request: PlacementRequest,
    nodes: Iterable[NodeView],
    *,
    sample: int = 0,
    start: int = 0,
    exclude: str | None = None,
) -> str:
    """The id of the best node for one instance; ``Unschedulable`` with per-filter counts.

    With ``sample`` > 0, only the first ``sample`` nodes that pass the filters are
    scored, looking from position ``start`` on (wrapping around): on a large cluster
    a placement costs O(sample) rather than O(nodes), like Kubernetes'
    percentageOfNodesToScore. Filtering goes on until ``sample`` nodes fit or every
    node was looked at, so a node that fits is never missed, and a cluster of at most
    ``sample`` nodes is always scored whole. ``exclude`` names a node never chosen
    (the one an instance moves away from), without the caller copying the list.
    """
    if sample > 0:
        ordered = nodes if isinstance(nodes, Sequence) else list(nodes)
        if len(ordered) > sample:
            at, count = start % len(ordered), len(ordered)
            # Lazily from ``at`` on: no copy of the whole list per placement.
            nodes = (ordered[(at + i) % count] for i in range(count))
    reasons: Counter[str] = Counter()
    best: tuple[tuple[float, float, str], NodeView] | None = None
    scored = 0
    for node in nodes:
        if node.id == exclude:
            continue
        reason = _refusal(request, node)
        if reason:
            reasons[reason] += 1
            continue
        key = _score(request, node)
        if best is None or key < best[0]:
            best = (key, node)
        scored += 1
        if scored == sample:
            break
    if best is None:
        raise Unschedulable(request.service, reasons)
    return best[1].id


def assign(node: NodeView, request: PlacementRequest) -> NodeView:
    """The node as it is once the instance is placed on it."""
    counts = dict(node.instances_by_service)
    counts[request.service] = counts.get(request.service, 0) + 1
    return dataclasses.replace(
        node,
        allocated_cpu=(node.allocated_millis + request.cpu_millis) / 1000,
        allocated_memory=node.allocated_memory + request.memory,
        instances_by_service=counts,
        used_ports=node.used_ports | request.ports,
    )


def place_many(request: PlacementRequest, nodes: Iterable[NodeView], count: int) -> list[str]:
    """Place ``count`` instances one after the other, each seeing the previous ones.

    Raises ``Unschedulable`` (with ``placed`` = the instances that did fit) when not
    all of them fit; the caller decides whether a partial placement is worth keeping.
    """
    if count < 0:
        raise ValueError("count must be >= 0")
    current = {n.id: n for n in nodes}
    placed: list[str] = []
    for _ in range(count):
        try:
            chosen = place(request, current.values())
        except Unschedulable as exc:
            raise Unschedulable(request.service, exc.reasons, placed=placed) from None
        current[chosen] = assign(current[chosen], request)
        placed.append(chosen)
    return placed


def check_fits(request: PlacementRequest, nodes: Sequence[NodeView]) -> None:
    """Refuse a service that no node could ever run, even empty and ready (apply time).

    Readiness, cordons and current allocations are ignored: they change; a request
    larger than every eligible node's total capacity does not.
    """
    reasons: Counter[str] = Counter()
    for node in nodes:
        reason = _static_refusal(request, node, free=False)
        if reason is None:
            return
        reasons[reason] += 1
    raise Unschedulable(request.service, reasons)


def fits_some_node(request: PlacementRequest, nodes: Sequence[NodeView]) -> bool:
    try:
        check_fits(request, nodes)
    except Unschedulable:
        return False
    return True


def service_key(tenant: str, app: str, service: str) -> str:
    return f"{tenant}/{app}/{service}"


_STRATEGIES = {
    pb.PLACEMENT_STRATEGY_UNSPECIFIED: Strategy.SPREAD,
    pb.PLACEMENT_STRATEGY_SPREAD: Strategy.SPREAD,
    pb.PLACEMENT_STRATEGY_BINPACK: Strategy.BINPACK,
}
_POOLS = {
    pb.POOL_POLICY_UNSPECIFIED: PoolPolicy.ANY,
    pb.POOL_POLICY_ANY: PoolPolicy.ANY,
    pb.POOL_POLICY_DEDICATED: PoolPolicy.DEDICATED,
    pb.POOL_POLICY_SHARED: PoolPolicy.SHARED,
}
_PROTOCOLS = {pb.PROTOCOL_UNSPECIFIED: "tcp", pb.PROTOCOL_TCP: "tcp", pb.PROTOCOL_UDP: "udp"}


def request_for(app: pb.Application, service: pb.Service) -> PlacementRequest:
    """The placement request for one instance of ``service`` of ``app``."""
    ports: frozenset[tuple[str, int]] = frozenset()
    if service.network == pb.NETWORK_MODE_HOST:
        ports = frozenset((_PROTOCOLS[p.protocol], p.port) for p in service.ports)
    else:
        # A published port is the node's: one instance per node and port.
        ports = frozenset(("tcp", p.publish) for p in service.ports if p.publish)
    return PlacementRequest(
        service=service_key(app.tenant, app.name, service.name),
        cpu=service.resources.cpu,
        memory=service.resources.memory,
        constraints=dict(service.placement.constraints),
        strategy=_STRATEGIES[service.placement.strategy],
        tenant=app.tenant or None,
        pool=_POOLS[service.placement.pool],
        ports=ports,
        needs=policy.needs(service),
    )
