"""Runtime choice, and the suite's Docker fixtures, without needing a Docker Engine."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from node.errors import RuntimeUnavailable
from node.runtime import docker_available, select_runtime
from pki.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def no_docker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    host = f"unix://{tmp_path}/no-docker.sock"
    monkeypatch.setenv("DOCKER_HOST", host)
    return host


def test_without_engine_auto_picks_process(tmp_path: Path, no_docker: str) -> None:
    assert not docker_available()
    runtime = select_runtime(None, "capstan-test-node-auto", tmp_path)
    try:
        assert runtime.name == "process"
        assert runtime.node_id == "capstan-test-node-auto"
    finally:
        runtime.close()


def test_without_engine_docker_is_unavailable(tmp_path: Path, no_docker: str) -> None:
    with pytest.raises(RuntimeUnavailable):
        select_runtime("docker", "capstan-test-node-auto", tmp_path)


def test_unknown_runtime_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="podman"):
        select_runtime("podman", "capstan-test-node-auto", tmp_path)
    assert list(tmp_path.iterdir()) == []


def _run_info_test(no_docker: str, require: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DOCKER_HOST": no_docker, "CAPSTAN_REQUIRE_DOCKER": require}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         "tests/node_runtime/test_docker_runtime.py::test_info"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120, check=False,
    )


def test_docker_tests_skip_without_engine(no_docker: str) -> None:
    result = _run_info_test(no_docker, "")
    assert result.returncode == 0, result.stdout
    assert "1 skipped" in result.stdout


def test_docker_tests_fail_without_engine_when_required(no_docker: str) -> None:
    result = _run_info_test(no_docker, "1")
    assert result.returncode == 1, result.stdout
    assert "CAPSTAN_REQUIRE_DOCKER=1" in result.stdout
    assert "1 error" in result.stdout
