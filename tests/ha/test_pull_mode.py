"""Pull-mode nodes under a leader change: their Watch stream follows the new leader,
and what they run converges to its sets, nothing lost or duplicated."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from protos import control_pb2

from ._cluster import HACluster, settled, sleeper_app, start_cluster

pytestmark = [pytest.mark.etcd, pytest.mark.slow]


@pytest.fixture
def pull_ha(tmp_path: Path) -> Iterator[HACluster]:
    if shutil.which("etcd") is None:
        if os.environ.get("CAPSTAN_REQUIRE_ETCD", "") == "1":
            pytest.fail("the etcd binary is not installed (CAPSTAN_REQUIRE_ETCD=1)")
        pytest.skip("the etcd binary is not installed")
    cluster = start_cluster(tmp_path)
    try:
        cluster.join("ha-p1", "127.0.0.74", mode="pull")
        cluster.join("ha-p2", "127.0.0.75", mode="pull")
        yield cluster
    finally:
        cluster.stop()


def test_pull_nodes_follow_the_new_leader(pull_ha: HACluster) -> None:
    ha = pull_ha
    old = ha.wait_leader()
    ha.control(old.address).Apply(control_pb2.ApplyRequest(app=sleeper_app("pull", 3)), timeout=10)
    settled(ha, ha.workload_ids("pull"), timeout=60)
    ha.by_address(old.address).kill9()
    new = ha.wait_leader(above=old.epoch)
    ha.control(new.address).Apply(control_pb2.ApplyRequest(app=sleeper_app("pull", 5)), timeout=10)
    wanted = ha.workload_ids("pull")
    assert len(wanted) == 5
    running = settled(ha, wanted, timeout=60)
    assert all(len(nodes) == 1 for nodes in running.values()), f"duplicated: {running}"
    # Each node watched the new leader (its stream moved there by itself).
    for agent in ha.agents:
        assert "refused assignments" not in agent.log.read_text()
