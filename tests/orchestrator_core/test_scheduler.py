"""Placement: filters with their refusal counts, scoring, tie-breaks, tenant pools."""

from __future__ import annotations

import dataclasses
import itertools

import pytest

from orchestrator.errors import Unschedulable
from orchestrator.scheduler import (
    NodeView,
    PlacementRequest,
    PoolPolicy,
    Strategy,
    assign,
    check_fits,
    fits_some_node,
    place,
    place_many,
    request_for,
)
from orchestrator.topology import load_topology

GI = 1 << 30
MI = 1 << 20
WEB = "acme/shop/web"


def node(node_id: str, **kw: object) -> NodeView:
    defaults: dict[str, object] = {"cpu": 4.0, "memory": 8 * GI}
    defaults.update(kw)
    return NodeView(node_id, **defaults)  # type: ignore[arg-type]


def req(**kw: object) -> PlacementRequest:
    defaults: dict[str, object] = {"service": WEB, "cpu": 0.5, "memory": 256 * MI, "tenant": "acme"}
    defaults.update(kw)
    return PlacementRequest(**defaults)  # type: ignore[arg-type]


# (case, request, nodes, expected node id or None, expected refusal counts)
CASES: list[tuple[str, PlacementRequest, list[NodeView], str | None, dict[str, int]]] = [
    ("one good node", req(), [node("n1")], "n1", {}),
    ("no nodes at all", req(), [], None, {}),
    (
        "each filter refuses one node",
        req(constraints={"disk": "ssd"}, ports=frozenset({("tcp", 80)})),
        [
            node("a", ready=False, labels={"disk": "ssd"}),
            node("b", cordoned=True, labels={"disk": "ssd"}),
            node("c", draining=True, labels={"disk": "ssd"}),
            node("d", pool="globex", labels={"disk": "ssd"}),
            node("e", labels={"disk": "hdd"}),
            node("f", labels={"disk": "ssd"}, used_ports=frozenset({("tcp", 80)})),
            node("g", labels={"disk": "ssd"}, allocated_cpu=3.75),
            node("h", labels={"disk": "ssd"}, allocated_memory=8 * GI - 255 * MI),
            node("i", labels={"disk": "ssd"}),
        ],
        "i",
        {},
    ),
    (
        "each filter's own reason",
        req(constraints={"disk": "ssd"}, ports=frozenset({("tcp", 80)})),
        [
            node("a", ready=False, labels={"disk": "ssd"}),
            node("b", cordoned=True, labels={"disk": "ssd"}),
            node("c", draining=True, labels={"disk": "ssd"}),
            node("d", pool="globex", labels={"disk": "ssd"}),
            node("e", labels={"disk": "hdd"}),
            node("f", labels={"disk": "ssd"}, used_ports=frozenset({("tcp", 80)})),
            node("g", labels={"disk": "ssd"}, allocated_cpu=3.75),
            node("h", labels={"disk": "ssd"}, allocated_memory=8 * GI - 255 * MI),
        ],
        None,
        {
            "not ready": 1,
            "cordoned": 1,
            "draining": 1,
            "in another tenant's pool": 1,
            "labels do not match": 1,
            "host port in use": 1,
            "insufficient cpu": 1,
            "insufficient memory": 1,
        },
    ),
    (
        "summary counts every refused node",
        req(memory=4 * GI),
        [
            node("a", memory=2 * GI),
            node("b", memory=2 * GI),
            node("c", cordoned=True),
            node("d", ready=False, memory=1 * GI),  # first failing filter wins: not ready
        ],
        None,
        {"insufficient memory": 2, "cordoned": 1, "not ready": 1},
    ),
    (
        "exact fit in millicores: 0.1 + 0.2 fits in 0.3",
        req(cpu=0.2, memory=0),
        [node("a", cpu=0.3, allocated_cpu=0.1)],
        "a",
        {},
    ),
    (
        "zero request fits a full node",
        req(cpu=0, memory=0),
        [node("a", allocated_cpu=4.0)],
        "a",
        {},
    ),
    (
        "udp port does not clash with tcp",
        req(ports=frozenset({("udp", 53)})),
        [node("a", used_ports=frozenset({("tcp", 53)}))],
        "a",
        {},
    ),
    (
        "labels must all match",
        req(constraints={"disk": "ssd", "zone": "z1"}),
        [
            node("a", labels={"disk": "ssd"}),
            node("b", labels={"disk": "ssd", "zone": "z1", "x": "y"}),
        ],
        "b",
        {},
    ),
]


@pytest.mark.parametrize(
    ("request_", "nodes", "expected", "reasons"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
def test_place_table(
    request_: PlacementRequest,
    nodes: list[NodeView],
    expected: str | None,
    reasons: dict[str, int],
) -> None:
    if expected is not None:
        assert place(request_, nodes) == expected
        return
    with pytest.raises(Unschedulable) as exc:
        place(request_, nodes)
    assert exc.value.reasons == reasons
    assert exc.value.service == request_.service


def test_refusal_summary_text() -> None:
    nodes = [node("a", memory=GI), node("b", memory=GI), node("c", cordoned=True)]
    with pytest.raises(Unschedulable) as exc:
        place(req(memory=4 * GI), nodes)
    assert str(exc.value) == (
        "acme/shop/web: unschedulable (3 nodes: 2 insufficient memory, 1 cordoned)"
    )
    with pytest.raises(Unschedulable, match=r"unschedulable \(no nodes\)"):
        place(req(), [])


# -- tenant pools ---------------------------------------------------------------------

POOL_NODES = [node("shared-1"), node("acme-1", pool="acme"), node("globex-1", pool="globex")]


@pytest.mark.parametrize(
    ("tenant", "policy", "allowed"),
    [
        ("acme", PoolPolicy.ANY, {"shared-1", "acme-1"}),
        ("acme", PoolPolicy.DEDICATED, {"acme-1"}),
        ("acme", PoolPolicy.SHARED, {"shared-1"}),
        ("globex", PoolPolicy.ANY, {"shared-1", "globex-1"}),
        ("initech", PoolPolicy.ANY, {"shared-1"}),
        ("initech", PoolPolicy.DEDICATED, set()),
        (None, PoolPolicy.ANY, {"shared-1"}),
    ],
)
def test_tenant_pool_isolation(tenant: str | None, policy: PoolPolicy, allowed: set[str]) -> None:
    request = req(tenant=tenant, pool=policy)
    reachable = {n.id for n in POOL_NODES if fits_some_node(request, [n])}
    assert reachable == allowed
    # And place() agrees with the static check on every subset of nodes.
    for size in range(1, len(POOL_NODES) + 1):
        for subset in itertools.combinations(POOL_NODES, size):
            ok = {n.id for n in subset} & allowed
            if ok:
                assert place(request, subset) in ok
            else:
                with pytest.raises(Unschedulable):
                    place(request, subset)


def test_pool_node_never_gets_another_tenants_workload_even_when_only_it_has_room() -> None:
    nodes = [node("shared", allocated_cpu=4.0), node("acme-big", pool="acme", cpu=64)]
    with pytest.raises(Unschedulable) as exc:
        place_many(req(tenant="globex", service="globex/x/y"), nodes, 1)
    assert exc.value.reasons == {"insufficient cpu": 1, "in another tenant's pool": 1}
    assert exc.value.placed == ()


# -- scoring --------------------------------------------------------------------------


def test_spread_prefers_fewest_instances_then_least_allocated() -> None:
    nodes = [
        node("a", instances_by_service={WEB: 1}),
        node("b", allocated_cpu=2.0),
        node("c", allocated_cpu=1.0),
    ]
    assert place(req(), nodes) == "c"
    nodes[2] = dataclasses.replace(nodes[2], instances_by_service={WEB: 2})
    assert place(req(), nodes) == "b"


def test_binpack_prefers_most_allocated_that_fits() -> None:
    nodes = [
        node("a", allocated_cpu=1.0),
        node("b", allocated_cpu=3.5),
        node("c", allocated_cpu=3.75),
    ]
    request = req(strategy=Strategy.BINPACK)
    assert place(request, nodes) == "b"  # c has only 0.25 free


def test_ties_go_to_the_smallest_id_regardless_of_order() -> None:
    nodes = [node("n3"), node("n1"), node("n2")]
    for perm in itertools.permutations(nodes):
        assert place(req(), perm) == "n1"
        assert place(req(strategy=Strategy.BINPACK), perm) == "n1"


def test_place_many_spreads_replicas_over_nodes() -> None:
    nodes = [node("n1"), node("n2"), node("n3")]
    assert place_many(req(), nodes, 6) == ["n1", "n2", "n3", "n1", "n2", "n3"]


def test_place_many_binpacks_until_full() -> None:
    nodes = [node("n1", cpu=1.0), node("n2", cpu=1.0)]
    assert place_many(req(strategy=Strategy.BINPACK), nodes, 4) == ["n1", "n1", "n2", "n2"]


def test_place_many_reports_what_fit() -> None:
    nodes = [node("n1", cpu=1.0), node("n2", cpu=0.5)]
    with pytest.raises(Unschedulable) as exc:
        place_many(req(), nodes, 5)
    assert sorted(exc.value.placed) == ["n1", "n1", "n2"]
    assert exc.value.reasons == {"insufficient cpu": 2}


def test_place_many_host_ports_one_per_node() -> None:
    request = req(ports=frozenset({("tcp", 8080)}))
    nodes = [node("n1"), node("n2")]
    assert place_many(request, nodes, 2) == ["n1", "n2"]
    with pytest.raises(Unschedulable) as exc:
        place_many(request, nodes, 3)
    assert exc.value.reasons == {"host port in use": 2}


def test_assign_accounts_for_the_instance() -> None:
    after = assign(node("n1", allocated_cpu=0.1), req(cpu=0.2, ports=frozenset({("tcp", 1)})))
    assert after.allocated_cpu == pytest.approx(0.3)
    assert after.allocated_memory == 256 * MI
    assert after.instances_by_service == {WEB: 1}
    assert after.used_ports == {("tcp", 1)}


# -- static fit (apply time) ----------------------------------------------------------


def test_check_fits_ignores_transient_state_but_not_capacity() -> None:
    busy = [node("a", cordoned=True, ready=False, allocated_cpu=4.0)]
    assert fits_some_node(req(), busy)
    with pytest.raises(Unschedulable) as exc:
        check_fits(req(memory=64 * GI), [node("a"), node("b", pool="globex", memory=128 * GI)])
    assert exc.value.reasons == {"insufficient memory": 1, "in another tenant's pool": 1}


def test_request_for_maps_the_topology() -> None:
    app = load_topology(
        """
apiVersion: capstan/v1
kind: Application
name: shop
tenant: acme
services:
  web:
    image: local/busybox:1
    resources: {cpu: 0.25, memory: 64Mi}
    placement: {strategy: binpack, constraints: {disk: ssd}, pool: dedicated}
    network: host
    ports: [{port: 8080}, {port: 53, protocol: udp}]
"""
    )
    request = request_for(app, app.services[0])
    assert request == PlacementRequest(
        service="acme/shop/web",
        cpu=0.25,
        memory=64 * MI,
        constraints={"disk": "ssd"},
        strategy=Strategy.BINPACK,
        tenant="acme",
        pool=PoolPolicy.DEDICATED,
        ports=frozenset({("tcp", 8080), ("udp", 53)}),
        needs=frozenset({"host_network", "low_ports"}),  # what its pool must permit
    )


# -- sampled scoring (large clusters) ---------------------------------------------------


def _many(n: int) -> list[NodeView]:
    return [NodeView(id=f"n{i:03d}", cpu=4, memory=8 * 2**30) for i in range(n)]


def test_sampled_placement_is_exact_on_a_cluster_no_larger_than_the_sample() -> None:
    nodes = _many(10)
    nodes[7] = NodeView(id="n007", cpu=4, memory=8 * 2**30, allocated_cpu=0.0)
    busy = [NodeView(id=n.id, cpu=4, memory=8 * 2**30, allocated_cpu=3.0) for n in nodes]
    busy[7] = nodes[7]
    request = PlacementRequest(service="t/a/s", cpu=0.5)
    for start in range(12):
        assert place(request, busy, sample=10, start=start) == place(request, busy) == "n007"


def test_sampled_placement_never_misses_the_one_node_that_fits() -> None:
    nodes = [NodeView(id=f"n{i:03d}", cpu=1, memory=2**30, cordoned=i != 90) for i in range(100)]
    request = PlacementRequest(service="t/a/s", cpu=0.5)
    assert place(request, nodes, sample=8, start=0) == "n090"
    with pytest.raises(Unschedulable) as info:
        place(request, [n for n in nodes if n.id != "n090"], sample=8, start=3)
    assert info.value.reasons == {"cordoned": 99}


def test_sampled_placement_scores_only_the_window_from_its_start() -> None:
    nodes = _many(100)
    request = PlacementRequest(service="t/a/s", cpu=0.1)
    # Every node is equal: the first node of the window wins the tie by id order
    # within the window, so the cursor decides where instances go.
    assert place(request, nodes, sample=4, start=0) == "n000"
    assert place(request, nodes, sample=4, start=50) == "n050"
    assert place(request, nodes, sample=4, start=98) == "n000"  # wraps: n098 n099 n000 n001


# -- sandbox policies (orchestrator.policy) ---------------------------------------------


def test_unisolated_nodes_only_for_pools_that_accept_them() -> None:
    request = PlacementRequest(service=WEB, cpu=0.1, memory=MI, tenant="acme")
    strict = node("unisolated", unisolated=True, grants=frozenset())
    with pytest.raises(Unschedulable) as err:
        place(request, [strict])
    assert "unisolated node" in str(err.value)
    accepting = node("accepting", unisolated=True, grants=frozenset({"unisolated"}))
    assert place(request, [strict, accepting]) == "accepting"
    isolated = node("isolated", grants=frozenset())
    assert place(request, [strict, isolated]) == "isolated"


def test_a_service_lands_only_where_its_pool_permits_what_it_asks() -> None:
    request = PlacementRequest(service=WEB, cpu=0.1, memory=MI, tenant="acme",
                               needs=frozenset({"host_network", "cap:NET_ADMIN"}))
    partly = node("partly", grants=frozenset({"host_network"}))
    with pytest.raises(Unschedulable) as err:
        place(request, [partly])
    assert "sandbox policy" in str(err.value)
    both = node("both", grants=frozenset({"host_network", "cap:NET_ADMIN"}))
    assert place(request, [partly, both]) == "both"
