"""``capstan run``: a topology file on the local process runtime, no daemon."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import docker
import pytest

from node.runtime import proc
from node.runtime._docker_names import namespace
from node.runtime.base import ContainerState
from node.runtime.images import busybox_binary
from node.runtime.process import ProcessRuntime, ensure_busybox_image
from orchestrator.standalone import instances, node_id, start_order
from orchestrator.topology import load_topology, load_topology_file
from tests.waiting import wait_for

from .conftest import Result, kill_mentioning, processes_mentioning

Run = Callable[..., Result]

pytestmark = pytest.mark.skipif(busybox_binary() is None, reason="needs a static busybox")

APP = """\
apiVersion: capstan/v1
kind: Application
name: web
tenant: acme
services:
  front:
    image: local/busybox:1
    command: ["sh", "-c", "echo front $CAPSTAN_VOLUME_SITE ready; while true; do sleep 1; done"]
    replicas: 2
    links: [store]
    volumes: [{name: site, path: /site}]
  store:
    image: local/busybox:1
    command: ["sh", "-c", "echo store ready; while true; do sleep 1; done"]
    ports: [{port: 6379}]  # a link reaches a service's ports
"""


@pytest.fixture
def app_file(tmp_path: Path, home: Path) -> Iterator[Path]:
    path = tmp_path / "web.yaml"
    path.write_text(APP)
    yield path
    kill_mentioning(str(home))


def _runtime(home: Path) -> ProcessRuntime:
    """The runtime scope `capstan run` uses for tenant acme, app web (the CLI is not
    running, so its lock is free)."""
    state = (home / "run" / "acme-web").absolute()
    return ProcessRuntime(node_id(load_topology(APP), state), state)


def test_plan_names_instances_and_orders_links() -> None:
    app = load_topology(APP)
    assert [s.name for s in start_order(app)] == ["store", "front"]
    planned = instances(app)
    assert [i.spec.name for i in planned] == ["web-store-0", "web-front-0", "web-front-1"]
    assert planned[1].spec.workload_id == "acme.web.front.0"
    assert planned[1].spec.volumes[0].path == "/site"


def test_detach_then_down(home: Path, capstan: Run, app_file: Path) -> None:
    r = capstan("run", "-f", str(app_file), "--runtime", "process", "--detach")
    assert r.code == 0, r.err
    assert "web: 3 instances on the process runtime" in r.out
    rt = _runtime(home)
    try:
        listed = {c.name: c for c in rt.list()}
        assert sorted(listed) == ["web-front-0", "web-front-1", "web-store-0"]
        assert all(c.state is ContainerState.RUNNING for c in listed.values())
        pids = [(c.pid, rt.record(c.name).start_ticks) for c in listed.values()]
        assert all(pid is not None for pid, _ in pids)
    finally:
        rt.close()

    # Running it again replaces the instances instead of failing on the names.
    r = capstan("run", "-f", str(app_file), "--runtime", "process", "-d")
    assert r.code == 0, r.err

    r = capstan("run", "--down", "-f", str(app_file), "--runtime", "process")
    assert r.code == 0, r.err
    assert "web: removed 3 instances" in r.out
    assert processes_mentioning(str(home)) == []
    # The first run's processes were replaced by the second's; none of them is left.
    assert not any(proc.is_same_alive(pid, ticks) for pid, ticks in pids if pid is not None)
    rt = _runtime(home)
    try:
        assert rt.list() == []
    finally:
        rt.close()


def test_bad_file_starts_nothing(home: Path, capstan: Run, tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(APP.replace("replicas: 2", "replicas: many"))
    r = capstan("run", "-f", str(path), "--runtime", "process")
    assert r.code == 1
    assert f"{path}:9: services.front.replicas: must be an integer, got string" in r.err
    assert not (home / "run").exists()


def test_missing_image_is_not_found_and_leaves_nothing(
    home: Path, capstan: Run, tmp_path: Path
) -> None:
    path = tmp_path / "other.yaml"
    path.write_text(APP.replace("image: local/busybox:1", "image: example/none:1", 1))
    r = capstan("run", "-f", str(path), "--runtime", "process", "-d")
    assert r.code == 3
    assert "image 'example/none:1' is not present and cannot be built here" in r.err
    assert processes_mentioning(str(home)) == []


def test_pinned_image_runs_only_from_that_content(
    home: Path, capstan: Run, tmp_path: Path
) -> None:
    scratch = ProcessRuntime("scratch", tmp_path / "scratch")
    try:
        ref = ensure_busybox_image(scratch)
        digest = scratch.image_ids()[ref]
    finally:
        scratch.close()
    wrong = tmp_path / "wrong.yaml"
    absent = f"image: local/busybox:1@sha256:{'ab' * 32}"
    wrong.write_text(APP.replace("image: local/busybox:1", absent))
    r = capstan("run", "-f", str(wrong), "--runtime", "process", "-d")
    assert r.code == 3, r.err
    assert "is not on this node" in r.err
    assert processes_mentioning(str(home)) == []
    right = tmp_path / "right.yaml"
    right.write_text(APP.replace("image: local/busybox:1", f"image: local/busybox:1@{digest}"))
    r = capstan("run", "-f", str(right), "--runtime", "process", "-d")
    assert r.code == 0, r.err
    r = capstan("run", "--down", "-f", str(right), "--runtime", "process")
    assert r.code == 0, r.err
    assert processes_mentioning(str(home)) == []


def test_foreground_follows_logs_restarts_and_removes_on_sigint(
    home: Path, app_file: Path
) -> None:
    text = APP + (
        "  flaky:\n"
        "    image: local/busybox:1\n"
        "    command: [\"sh\", \"-c\", \"echo flaky; exit 3\"]\n"
        "    restart: on-failure\n"
    )
    app_file.write_text(text)
    child = subprocess.Popen(
        [sys.executable, "-m", "orchestrator.cli", "run", "-f", str(app_file),
         "--runtime", "process"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
    )
    seen: list[str] = []
    try:
        assert child.stdout is not None
        wanted = {"web-store-0 | store ready", "web-front-1 | front", "restarting"}
        deadline = time.monotonic() + 60
        while wanted and time.monotonic() < deadline:
            line = child.stdout.readline()
            if not line:
                break
            seen.append(line.rstrip("\n"))
            wanted = {w for w in wanted if w not in line}
        assert not wanted, seen
        assert processes_mentioning(str(home / "run"))
        child.send_signal(signal.SIGINT)
        rest, _ = child.communicate(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == 130, [*seen, rest]  # interrupted, as docs/cli.md says
    assert "web: removed 4 instances" in rest
    assert processes_mentioning(str(home)) == []
    assert load_topology_file(app_file).name == "web"


@pytest.mark.docker
def test_docker_detach_then_down_leaves_nothing(
    home: Path, capstan: Run, app_file: Path, docker_client: docker.DockerClient,
    busybox_image: str,
) -> None:
    state = (home / "run" / "acme-web").absolute()
    ident = node_id(load_topology(APP), state)

    def containers() -> list[str]:
        found = docker_client.containers.list(all=True, filters={"label": f"capstan.node={ident}"})
        return sorted(c.labels["capstan.name"] for c in found)

    def tags() -> list[str]:
        return [t for i in docker_client.images.list() for t in i.tags
                if t.startswith(namespace(ident))]

    try:
        r = capstan("run", "-f", str(app_file), "--runtime", "docker", "-d")
        assert r.code == 0, r.err
        assert containers() == ["web-front-0", "web-front-1", "web-store-0"]
        assert len(tags()) == 1
        r = capstan("run", "--down", "-f", str(app_file), "--runtime", "docker")
        assert r.code == 0, r.err
        assert "web: removed 3 instances" in r.out
        assert containers() == []
        assert tags() == []
    finally:
        label = {"label": f"capstan.node={ident}"}
        for c in docker_client.containers.list(all=True, filters=label):
            c.remove(force=True)


SECRET_APP = """\
apiVersion: capstan/v1
kind: Application
name: vault
services:
  db:
    image: local/busybox:1
    command: ["sh", "-c", "sha256sum /run/secrets/db-pass; stat -c 'mode %a' /run/secrets/db-pass;
      while true; do sleep 1; done"]
    secrets: [{name: db-pass}]
"""


def test_secrets_from_local_files(home: Path, capstan: Run, tmp_path: Path) -> None:
    import hashlib

    path = tmp_path / "vault.yaml"
    path.write_text(SECRET_APP)
    value = tmp_path / "db-pass.txt"
    value.write_bytes(b"standalone canary 31c7")
    try:
        # A secret the file names and the command line does not give: nothing starts.
        r = capstan("run", "-f", str(path), "--runtime", "process", "-d")
        assert r.code != 0
        assert "db-pass: give each with --secret NAME=FILE" in r.err
        r = capstan(
            "run", "-f", str(path), "--runtime", "process", "-d", "--secret", f"db-pass={value}"
        )
        assert r.code == 0, r.err
        state = (home / "run" / "default-vault").absolute()
        rt = ProcessRuntime(node_id(load_topology(SECRET_APP), state), state)
        try:
            wait_for(
                lambda: b"mode" in b"".join(rt.logs("vault-db-0")),
                20,
                "the instance to print its secret's mode",
            )
            out = b"".join(rt.logs("vault-db-0")).decode()
        finally:
            rt.close()
        assert hashlib.sha256(b"standalone canary 31c7").hexdigest() in out
        assert "mode 400" in out
        # The value is in the instance's tmpfs file only, not in the run's state.
        leaked = [
            p for p in state.rglob("*")
            if p.is_file() and "secrets" not in p.relative_to(state).parts[:1]
            and b"standalone canary" in p.read_bytes()
        ]
        assert leaked == []
    finally:
        r = capstan("run", "--down", "-f", str(path), "--runtime", "process")
    assert r.code == 0, r.err
    assert not os.path.ismount(home / "run" / "default-vault" / "secrets")
