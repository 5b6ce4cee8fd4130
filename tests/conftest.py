"""Session fixtures shared by the whole suite: the Docker Engine, the busybox image,
and the etcd on loopback.

Without a Docker Engine the tests that need one are skipped, unless
CAPSTAN_REQUIRE_DOCKER=1 (CI on a machine that has one), which turns the skip into a
failure so a broken engine cannot pass silently. The same holds for etcd
(CAPSTAN_ETCD_ENDPOINTS, default 127.0.0.1:2379) with CAPSTAN_REQUIRE_ETCD=1.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
from collections.abc import Iterator
from pathlib import Path

import docker
import docker.errors
import pytest
import requests.exceptions

from node.runtime.images import BUSYBOX_IMAGE, busybox_binary, ensure_docker_busybox
from node.secretfiles import secret_mounts, unmount
from orchestrator import etcdproc
from orchestrator.etcdproc import Member


def pytest_configure(config: pytest.Config) -> None:
    # Ctrl-C as a terminal gives it, for this process and every command a test starts:
    # a suite started in the background by a non-interactive shell (`cmd &`) runs with
    # SIGINT ignored, an exec'd child inherits that, and Python then never raises
    # KeyboardInterrupt (tests that interrupt `capstan run`, `events -w` or `node join`
    # waited forever). A handled signal is reset to the default at exec.
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def _docker_required() -> bool:
    return os.environ.get("CAPSTAN_REQUIRE_DOCKER", "") == "1"


@pytest.fixture(scope="session")
def docker_client() -> Iterator[docker.DockerClient]:
    """A client of the local Docker Engine; skips (or fails, if required) without one."""
    try:
        client = docker.from_env(timeout=30)
        client.ping()
    except (docker.errors.DockerException, requests.exceptions.RequestException, OSError) as exc:
        message = f"no Docker Engine answers: {exc}"
        if _docker_required():
            pytest.fail(message + " (CAPSTAN_REQUIRE_DOCKER=1)")
        pytest.skip(message)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture(scope="session")
def busybox_image(docker_client: docker.DockerClient) -> str:
    """``local/busybox:1``, built from the host's static busybox when missing."""
    try:
        docker_client.images.get(BUSYBOX_IMAGE)
        return BUSYBOX_IMAGE
    except docker.errors.ImageNotFound:
        pass
    if busybox_binary() is None:
        message = f"{BUSYBOX_IMAGE} is missing and no busybox binary is installed to build it"
        if _docker_required():
            pytest.fail(message)
        pytest.skip(message)
    return ensure_docker_busybox(BUSYBOX_IMAGE)


@pytest.fixture(scope="session")
def etcd_endpoints() -> str:
    """The shared etcd's client endpoints; each test keeps to its own key namespace."""
    endpoints = os.environ.get("CAPSTAN_ETCD_ENDPOINTS", "127.0.0.1:2379")
    host, _, port = endpoints.split(",")[0].rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=2).close()
    except OSError as exc:
        message = f"no etcd answers at {endpoints}: {exc}"
        if os.environ.get("CAPSTAN_REQUIRE_ETCD", "") == "1":
            pytest.fail(message + " (CAPSTAN_REQUIRE_ETCD=1)")
        pytest.skip(message)
    return endpoints


@pytest.fixture
def private_etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Member]:
    """An etcd of this test's own on loopback, to kill or restart without disturbing
    the shared one."""
    if shutil.which("etcd") is None:
        message = "the etcd binary is not installed"
        if os.environ.get("CAPSTAN_REQUIRE_ETCD", "") == "1":
            pytest.fail(message + " (CAPSTAN_REQUIRE_ETCD=1)")
        pytest.skip(message)
    root = tmp_path_factory.mktemp("etcd")
    (member,) = etcdproc.cluster(root, 1)
    member.start([member])
    try:
        member.wait_listening()
        yield member
    finally:
        member.kill()


@pytest.fixture(scope="session", autouse=True)
def _no_leftovers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """A test run leaves no sandbox and no secrets mount behind. Instances outlive an
    agent killed with SIGKILL, and so does its secrets tmpfs (by design: a restarted
    agent takes both over); tests that kill agents, or stop them that way in their
    teardown, leave them in the run's temporary directories: they end here."""
    yield
    base = tmp_path_factory.getbasetemp()
    end_sandboxes(base)
    for mount in secret_mounts(base):
        unmount(mount)


def end_sandboxes(under: Path) -> list[int]:
    """SIGKILL the session of every process-runtime sandbox working under ``under``;
    the sessions ended."""
    root = os.path.realpath(under).rstrip("/") + "/"
    own = os.getsid(0)
    ended: set[int] = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            cwd = os.readlink(f"/proc/{entry}/cwd")
            sid = os.getsid(int(entry))
        except OSError:
            continue
        if b"_sandbox_init.py" not in cmdline or not cwd.startswith(root) or sid in (own, 0):
            continue
        if sid not in ended:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(sid, signal.SIGKILL)
            ended.add(sid)
    return sorted(ended)
