"""`capstan up --ha`: three etcd members on mTLS and three orchestrators on loopback,
the same demo and commands, a leader killed under the user, and `down` leaving
nothing behind."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from orchestrator.local import LocalCluster

from .conftest import Result, kill_mentioning, processes_mentioning

Run = Callable[..., Result]
pytestmark = [pytest.mark.etcd, pytest.mark.slow]


def _free(port: int, host: str = "127.0.0.1", *, reuse: bool = False) -> bool:
    """Nothing bound there (``reuse``: nothing listening; closed connections may linger)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        if reuse:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_ha_base() -> int:
    """A base port with PORT..PORT+12 free on 127.0.0.1 and PORT+2 on the nodes'."""
    for _ in range(200):
        base = random.randrange(20000, 60000, 20)
        ports = [base + i for i in range(13) if i != 2]
        if all(_free(p) for p in ports) and all(
            _free(base + 2, f"127.0.0.{i}") for i in (2, 3)
        ):
            return base
    raise AssertionError("no free base port found")


@pytest.fixture
def ha_home(home: Path) -> Iterator[Path]:
    if shutil.which("etcd") is None:
        if os.environ.get("CAPSTAN_REQUIRE_ETCD", "") == "1":
            pytest.fail("the etcd binary is not installed (CAPSTAN_REQUIRE_ETCD=1)")
        pytest.skip("the etcd binary is not installed")
    yield home
    LocalCluster(home / "local").down()
    kill_mentioning(str(home))


def test_up_ha_survives_a_killed_leader_and_down_leaves_nothing(
    ha_home: Path, capstan: Run
) -> None:
    base = free_ha_base()
    r = capstan("up", "--ha", "--nodes", "2", "--runtime", "process", "--base-port", str(base))
    assert r.code == 0, r.err
    assert "(mTLS)" in r.out and "leader: o" in r.out
    record = json.loads((ha_home / "local" / "cluster.json").read_text())
    assert record["ha"] is True
    assert sorted(p["name"] for p in record["processes"]) == [
        "etcd-1", "etcd-2", "etcd-3", "node-1", "node-2", "o1", "o2", "o3",
    ]  # fmt: skip

    r = capstan("get", "orchestrators", "-o", "json")
    assert r.code == 0, r.err
    info = json.loads(r.out)
    leader = info["leader"]
    assert info["store"] == "etcd" and int(info["epoch"]) >= 1
    assert sorted(m["member"] for m in info["members"]) == ["o1", "o2", "o3"]
    assert [e.get("healthy", False) for e in info["etcd"]] == [True, True, True]
    assert all(e["endpoint"].startswith("https://") for e in info["etcd"]), "etcd in the clear"

    r = capstan("status")
    assert r.code == 0, r.err
    assert f"leader: {leader}" in r.out and "ETCD MEMBER" in r.out

    victim = next(p for p in record["processes"] if p["name"] == leader)
    os.kill(victim["pid"], signal.SIGKILL)
    r = capstan("get", "nodes")  # no user action between the kill and this
    assert r.code == 0, r.err
    rows = [line.split() for line in r.out.splitlines()[1:]]
    assert sorted((row[0], "ready" in row) for row in rows) == [("node-1", True), ("node-2", True)]
    r = capstan("get", "orchestrators", "-o", "json")
    after = json.loads(r.out)
    assert after["leader"] != leader and int(after["epoch"]) > int(info["epoch"])

    r = capstan("down")
    assert r.code == 0, r.err
    assert processes_mentioning(str(ha_home)) == []
    assert not list((ha_home / "local" / "etcd").glob("etcd-*/")), "etcd data left behind"
    assert all(_free(base + i, reuse=True) for i in range(13) if i != 2), "still listening"
