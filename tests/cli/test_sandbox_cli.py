"""The admin's sandbox commands on a real local cluster (process runtime, as root):
`capstan get nodes -o wide` shows the isolation, `pool set` / `quota set` /
`describe tenant`, and apply refusals naming file, line, field and quota."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from node.runtime.images import busybox_binary

from .conftest import Result
from .test_local_cluster import cluster_home, free_base_port  # noqa: F401 - fixture

Run = Callable[..., Result]

HOST_APP = """\
apiVersion: capstan/v1
kind: Application
name: edge
services:
  web:
    image: local/busybox:1
    command: ["sleep", "600"]
    network: host
    ports: [{port: 8080}]
"""

SMALL_APP = """\
apiVersion: capstan/v1
kind: Application
name: shop
services:
  web:
    image: local/busybox:1
    command: ["sleep", "600"]
    replicas: REPLICAS
    resources: {cpu: 0.1, memory: 16Mi}
"""


@pytest.mark.slow
@pytest.mark.skipif(busybox_binary() is None, reason="needs a static busybox")
def test_pool_policy_quota_and_isolation_from_the_cli(
    cluster_home: Path, capstan: Run, tmp_path: Path  # noqa: F811 - fixture
) -> None:
    base = free_base_port(1)
    r = capstan("up", "--nodes", "1", "--runtime", "process", "--base-port", str(base))
    assert r.code == 0, r.err
    r = capstan("get", "nodes", "-o", "wide")
    assert r.code == 0, r.err
    assert "ISOLATION" in r.out and "sandbox" in r.out  # the agent runs as root

    edge = tmp_path / "edge.yaml"
    edge.write_text(HOST_APP)
    r = capstan("apply", "-f", str(edge), "--no-wait")
    assert r.code != 0
    assert f"{edge}:8: services.web.network: host networking is not permitted in pools " \
           "default or shared" in r.err
    r = capstan("pool", "set", "shared", "--allow-host-network")
    assert r.code == 0, r.err
    assert "shared: host-network" in r.out
    r = capstan("pool", "list")
    assert "shared: host-network" in r.out
    # The pool permits it now, but the node keeps the ceiling it was given at join
    # (defaults only): it would refuse the create itself, so nothing is placed there.
    r = capstan("apply", "-f", str(edge), "--dry-run")
    assert r.code != 0
    assert "within what it was given at join" in r.err

    r = capstan("quota", "set", "default", "--instances", "2", "--memory", "64Mi")
    assert r.code == 0, r.err
    assert "quota of default: cpu -, memory 64Mi, instances 2" in r.out
    shop = tmp_path / "shop.yaml"
    shop.write_text(SMALL_APP.replace("REPLICAS", "2"))
    r = capstan("apply", "-f", str(shop), "--timeout", "60s")
    assert r.code == 0, r.out + r.err
    r = capstan("describe", "tenant", "default")
    assert r.code == 0, r.err
    lines = {line.split()[0]: line.split()[1:] for line in r.out.splitlines() if line.strip()}
    assert lines["instances"] == ["2", "2"]
    assert lines["memory"] == ["32Mi", "64Mi"]
    shop.write_text(SMALL_APP.replace("REPLICAS", "3"))
    r = capstan("scale", "shop/web", "3")
    assert r.code != 0
    assert "quota of tenant default exceeded" in r.err
    assert "instances 3 asked, quota 2" in r.err
