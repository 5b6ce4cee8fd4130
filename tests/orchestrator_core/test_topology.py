"""Loading valid topology files, defaults, canonical hashes, and input-level refusals."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.errors import TopologyError
from orchestrator.topology import (
    canonical_json,
    load_topology,
    load_topology_file,
    spec_hash,
    template_hash,
)
from protos import topology_pb2 as pb

ROOT = Path(__file__).resolve().parents[2]
MI = 1 << 20

MINIMAL = """
apiVersion: capstan/v1
kind: Application
name: shop
services:
  web:
    image: local/busybox:1
"""


def test_design_example_loads_exactly() -> None:
    app = load_topology_file(ROOT / "examples" / "shop.yaml")
    placement = pb.Placement(strategy=pb.PLACEMENT_STRATEGY_SPREAD, pool=pb.POOL_POLICY_ANY)
    web, db = app.services
    assert (app.name, app.tenant) == ("shop", "acme")
    assert web == pb.Service(
        name="web",
        image="local/busybox:1",
        command=list(web.command),
        replicas=3,
        resources=pb.Resources(cpu=0.25, memory=64 * MI),
        placement=placement,
        autoscale=pb.Autoscale(min=2, max=6, target_cpu=0.6),
        restart=pb.RESTART_POLICY_ALWAYS,
        max_unavailable=1,
        network=pb.NETWORK_MODE_NONE,
        ports=[pb.ServicePort(port=8080, protocol=pb.PROTOCOL_TCP, publish=18080)],
        links=["db"],
    )
    assert web.command[:2] == ["sh", "-c"] and "nc -ll -p 8080" in web.command[2]
    assert db == pb.Service(
        name="db",
        image="local/busybox:1",
        command=list(db.command),
        replicas=1,
        resources=pb.Resources(),
        placement=placement,
        volumes=[pb.ServiceVolume(name="data", path="/data")],
        restart=pb.RESTART_POLICY_ALWAYS,
        max_unavailable=1,
        network=pb.NETWORK_MODE_NONE,
        ports=[pb.ServicePort(port=5432, protocol=pb.PROTOCOL_TCP)],
    )


def test_defaults_are_explicit() -> None:
    svc = load_topology(MINIMAL).services[0]
    assert svc.HasField("replicas") and svc.replicas == 1
    assert svc.HasField("max_unavailable") and svc.max_unavailable == 1
    assert not svc.HasField("autoscale")
    assert svc.restart == pb.RESTART_POLICY_ALWAYS
    assert svc.network == pb.NETWORK_MODE_NONE
    assert svc.placement.strategy == pb.PLACEMENT_STRATEGY_SPREAD
    assert svc.placement.pool == pb.POOL_POLICY_ANY
    assert load_topology(MINIMAL).tenant == ""


def test_every_field_maps() -> None:
    app = load_topology(
        MINIMAL
        + """
    command: [httpd, -f]
    env: {B: "2", A: "1"}
    replicas: 0
    resources: {cpu: 2, memory: 1G}
    placement:
      strategy: binpack
      constraints: {disk: ssd, topology.capstan.io/zone: z1}
      pool: shared
    volumes:
      - {name: data, path: /var/lib/data, readOnly: true}
    restart: on-failure
    maxUnavailable: 2
    links: [db]
    ports: [{port: 8080, publish: 18080}, {port: 53, protocol: udp}]
  db:
    image: registry.example:5000/team/db@sha256:"""
        + "a" * 64
        + """
    resources: {cpu: 0.5}
    autoscale: {min: 2, max: 4, targetCpu: 1}
    ports: [{port: 5432}]
  probe:
    image: local/busybox:1
    network: host
"""
    )
    web, db, probe = app.services
    assert dict(web.env) == {"A": "1", "B": "2"}
    assert web.replicas == 0
    assert (web.resources.cpu, web.resources.memory) == (2.0, 10**9)
    assert web.placement.strategy == pb.PLACEMENT_STRATEGY_BINPACK
    assert dict(web.placement.constraints) == {"disk": "ssd", "topology.capstan.io/zone": "z1"}
    assert web.placement.pool == pb.POOL_POLICY_SHARED
    assert list(web.volumes) == [
        pb.ServiceVolume(name="data", path="/var/lib/data", read_only=True)
    ]
    assert web.restart == pb.RESTART_POLICY_ON_FAILURE
    assert web.max_unavailable == 2
    assert list(web.links) == ["db"]
    assert web.network == pb.NETWORK_MODE_NONE
    assert probe.network == pb.NETWORK_MODE_HOST
    assert [(p.port, p.protocol, p.publish) for p in web.ports] == [
        (8080, pb.PROTOCOL_TCP, 18080),
        (53, pb.PROTOCOL_UDP, 0),
    ]
    assert [(p.port, p.publish) for p in db.ports] == [(5432, 0)]
    assert db.replicas == 2, "autoscale without replicas starts at min"
    assert db.autoscale == pb.Autoscale(min=2, max=4, target_cpu=1.0)


@pytest.mark.parametrize(
    ("written", "size"),
    [
        ("4Mi", 4 * MI),
        ("64Mi", 64 * MI),
        ("512Ki", None),  # below the 4Mi floor
        ("1Gi", 1 << 30),
        ("2Ti", 2 << 40),
        ("5M", 5 * 10**6),
        ("1G", 10**9),
        ("1T", 10**12),
        ("8388608", 8 * MI),  # a quoted plain number is bytes too
        ("08Mi", None),  # no leading zeros
        ("64MiB", None),
        ("64 Mi", None),
        ("-64Mi", None),
        ("1e9", None),
        ("", None),
    ],
)
def test_memory_sizes(written: str, size: int | None) -> None:
    text = MINIMAL + f'    resources: {{memory: "{written}"}}\n'
    if size is None:
        with pytest.raises(TopologyError, match=r"services\.web\.resources\.memory"):
            load_topology(text)
    else:
        assert load_topology(text).services[0].resources.memory == size


@pytest.mark.parametrize(("written", "cores"), [("1", 1.0), ("0.001", 0.001), ("1.5", 1.5)])
def test_cpu_values(written: str, cores: float) -> None:
    text = MINIMAL + f"    resources: {{cpu: {written}}}\n"
    assert load_topology(text).services[0].resources.cpu == cores


# -- canonical form and hashes ----------------------------------------------------------

BLOCK = """
apiVersion: capstan/v1
kind: Application
name: shop
services:
  web:
    image: local/busybox:1
    env:
      A: "1"
      B: "2"
    resources:
      memory: 64Mi
      cpu: 0.25
    placement:
      spread: node
"""
FLOW = """
{apiVersion: capstan/v1, kind: Application, name: shop, services: {web: {
  image: local/busybox:1, env: {B: "2", A: "1"}, replicas: 1, restart: always,
  resources: {cpu: 0.250, memory: 67108864}, placement: {strategy: spread, pool: any}}}}
"""


def test_same_meaning_same_message_same_hash() -> None:
    block, flow = load_topology(BLOCK), load_topology(FLOW)
    assert block == flow
    assert spec_hash(block.services[0]) == spec_hash(flow.services[0])
    assert canonical_json(block) == canonical_json(flow)


def test_hash_is_stable_across_releases() -> None:
    # Stored hashes are compared with freshly computed ones after upgrades: this value
    # must only change on purpose (a changed canonical form or schema default).
    # (The DESIGN §6 service as first written; examples/shop.yaml has grown since.)
    svc = load_topology(
        """
apiVersion: capstan/v1
kind: Application
name: shop
tenant: acme
services:
  web:
    image: local/busybox:1
    command: ["httpd", "-f", "-p", "8080"]
    replicas: 3
    resources: {cpu: 0.25, memory: 64Mi}
    placement: {spread: node}
    autoscale: {min: 2, max: 6, targetCpu: 0.6}
"""
    ).services[0]
    assert spec_hash(svc) == (
        "sha256:a1908d64d2d6c125fa87bce10476c00af20fd362fad0c423f1d051c9073acbf4"
    )


def test_spec_hash_sees_every_change_template_hash_ignores_scaling() -> None:
    base = load_topology(BLOCK).services[0]

    def changed(edit: str) -> pb.Service:
        return load_topology(BLOCK + edit).services[0]

    scaled = changed("    replicas: 5\n    maxUnavailable: 2\n")
    assert spec_hash(scaled) != spec_hash(base)
    assert template_hash(scaled) == template_hash(base)

    for edit in ("    command: [sh]\n", "    restart: never\n", "    network: host\n"):
        other = changed(edit)
        assert spec_hash(other) != spec_hash(base)
        assert template_hash(other) != template_hash(base)
    assert spec_hash(base).startswith("sha256:") and len(spec_hash(base)) == 71


# -- input-level refusals -----------------------------------------------------------------


def test_bytes_with_bom_are_accepted() -> None:
    assert load_topology(b"\xef\xbb\xbf" + MINIMAL.encode()).name == "shop"


def test_non_utf8_is_refused_with_line() -> None:
    data = MINIMAL.encode() + b"    command: [\xff]\n"
    with pytest.raises(TopologyError) as exc:
        load_topology(data, source="app.yaml")
    assert str(exc.value) == "app.yaml:8: is not UTF-8 text"


def test_control_characters_are_refused_with_line() -> None:
    with pytest.raises(TopologyError) as exc:
        load_topology(MINIMAL + "    command: [\x07]\n", source="app.yaml")
    assert str(exc.value).startswith("app.yaml:8: character '\\x07' is not allowed")


def test_oversized_document_is_refused_before_parsing() -> None:
    text = MINIMAL + "    command: [" + ", ".join(["x" * 100] * 11000) + "]\n"
    with pytest.raises(TopologyError, match=r"larger than 1048576 bytes"):
        load_topology(text)


def test_nul_in_string_is_refused() -> None:
    with pytest.raises(TopologyError, match=r"app.yaml:8: services\.web\.command\[0\]: .*NUL"):
        load_topology(MINIMAL + '    command: ["a\\0b"]\n', source="app.yaml")


def test_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(TopologyError, match=r"nope\.yaml: does not exist"):
        load_topology_file(tmp_path / "nope.yaml")
    with pytest.raises(TopologyError, match="is a directory"):
        load_topology_file(tmp_path)


def test_error_carries_structured_problems() -> None:
    with pytest.raises(TopologyError) as exc:
        load_topology(MINIMAL + "    replicas: -1\n    replicaz: 2\n", source="app.yaml")
    err = exc.value
    assert err.source == "app.yaml"
    assert [(p.line, p.path) for p in err.problems] == [
        (8, "services.web.replicas"),
        (9, "services.web.replicaz"),
    ]
    assert str(err).splitlines()[0] == "app.yaml:8: services.web.replicas: must be >= 0, got -1"
