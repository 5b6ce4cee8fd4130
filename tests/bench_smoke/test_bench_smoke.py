"""Smoke runs of the benchmarks: a few nodes or tokens, seconds each. They check that
each benchmark runs end to end and prints its figures and ratios, never the figures
themselves (performance is measured by the benchmarks, not by tests)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BENCH = REPO / "bench"


def _run(script: str, *args: str, timeout: float = 240) -> str:
    env = {**os.environ, "GRPC_VERBOSITY": "ERROR"}
    bin_dir = str(Path(sys.executable).parent)
    env["PATH"] = bin_dir + os.pathsep + env.get("PATH", "")
    result = subprocess.run(
        [sys.executable, str(BENCH / script), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        env=env,
        check=False,
    )
    assert result.returncode in (0, 1), result.stdout + result.stderr  # 1: a goal missed
    return result.stdout


@pytest.mark.slow
def test_bench_scale_with_three_hollow_nodes(tmp_path: Path) -> None:
    plot = tmp_path / "scale.png"
    out = _run("bench_scale.py", "--nodes", "3", "--idle-seconds", "1", "--plot", str(plot))
    if "| idle CPU (% of a core)" not in out:
        # A benchmark times a loaded machine: once in a full suite, one figure of the
        # 3-node run came back missing and the table was not printed. The smoke test
        # checks that the script runs end to end; a second run must print everything.
        out = _run("bench_scale.py", "--nodes", "3", "--idle-seconds", "1", "--plot", str(plot))
    assert "| idle CPU (% of a core)" in out, out
    assert "| placements/s" in out
    # Every number the table holds was measured: no run ends with a missing figure.
    table = [line for line in out.splitlines() if line.startswith("| ")]
    assert table and not any(" nan " in line for line in table), out
    assert "false positives" in out
    # The revoked node's certificate was refused by every node it called.
    refused = next(line for line in table if "refused (probe)" in line)
    done, total = refused.split("|")[2].strip().split("/")
    assert done == total and int(total) >= 1, refused
    if importlib.util.find_spec("matplotlib") is not None:
        assert plot.stat().st_size > 0


def test_bench_authz_small() -> None:
    out = _run("bench_authz.py", "--calls", "50", "--rounds", "1")
    assert "| without the interceptor (baseline) |" in out
    assert "| behind AuthorizationInterceptor |" in out
    assert "ratio" in out


def test_bench_mint_small() -> None:
    out = _run("bench_mint.py", "--tokens", "300", "--workers", "32")
    assert "group commit / one at a time" in out
    assert "chain intact" in out


def test_bench_tokens_small() -> None:
    out = _run("bench_tokens.py", "--n", "50", "--rounds", "3")
    assert "verify/verify" in out


def test_bench_node_latency_small() -> None:
    out = _run("bench_node.py", "--calls", "50", "--rounds", "1", "--threads", "2", "--skip-memory")
    assert "ratio    p50" in out


@pytest.mark.docker
@pytest.mark.slow
def test_bench_deploy_small(busybox_image: str) -> None:
    out = _run("bench_deploy.py", "--replicas", "2", "--skip-swarm", "--base-port", "7660")
    assert "raw parallel docker run" in out
    assert "Capstan / raw" in out


@pytest.mark.slow
def test_bench_link_prints_the_three_paths_and_ratios() -> None:
    out = _run("bench_link.py", "--requests", "100", "--megabytes", "4", "--rounds", "1")
    for row in ("| direct TCP |", "| TLS pair |", "| link |"):
        assert row in out, out
    assert "link throughput / TLS pair:" in out and "link p50 / direct TCP p50:" in out


def test_bench_gate_small() -> None:
    out = _run("bench_gate.py", "--sizes", "200", "--streams", "3", timeout=120)
    assert "x" in out.split("ratio", 1)[1]
    assert "worst / promise =" in out
