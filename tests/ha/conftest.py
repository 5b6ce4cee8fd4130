"""A three-member etcd, three orchestrators and two node agents, all real processes."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.ha._cluster import HACluster, start_cluster


@pytest.fixture
def ha(tmp_path: Path) -> Iterator[HACluster]:
    if shutil.which("etcd") is None:
        if os.environ.get("CAPSTAN_REQUIRE_ETCD", "") == "1":
            pytest.fail("the etcd binary is not installed (CAPSTAN_REQUIRE_ETCD=1)")
        pytest.skip("the etcd binary is not installed")
    cluster = start_cluster(tmp_path)
    try:
        cluster.join("ha-n1", "127.0.0.71")
        cluster.join("ha-n2", "127.0.0.72")
        yield cluster
    finally:
        cluster.stop()
