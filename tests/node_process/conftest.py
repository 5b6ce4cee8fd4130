"""Fixtures for the process runtime: real processes, each killed in a finalizer."""

from __future__ import annotations

import contextlib
import io
import os
import signal
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from node.runtime import proc
from node.runtime.base import ContainerSpec
from node.runtime.process import STATE_DB, ProcessRuntime
from node.state import NodeState

IMAGE = "local/busybox:1"


def kill_recorded(state_dir: Path) -> None:
    """SIGKILL the session of every process recorded under ``state_dir`` that still runs."""
    db = state_dir / STATE_DB
    if not db.exists():
        return
    state = NodeState(db)
    try:
        for rec in state.all():
            if rec.pid is not None and proc.is_same_alive(rec.pid, rec.start_ticks):
                proc.signal_session(rec.pid, signal.SIGKILL)
    finally:
        state.close()


def kill_session(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    proc.signal_session(pid, signal.SIGKILL)


def gone(pid: int) -> bool:
    st = proc.read_stat(pid)
    return st is None or st.gone


# Applets the tests run. The full image (ensure_busybox_image) has ~400 links, and
# creating symlinks is slow on some filesystems: most tests use this slim variant.
SLIM_APPLETS = ("cat", "dd", "echo", "env", "ls", "pwd", "seq", "sh", "sleep", "true")


def busybox_rootfs(applets: tuple[str, ...] = SLIM_APPLETS) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.add("/bin/busybox", arcname="bin/busybox")
        for applet in applets:
            link = tarfile.TarInfo(f"bin/{applet}")
            link.type = tarfile.SYMTYPE
            link.linkname = "busybox"
            tar.addfile(link)
    return buf.getvalue()


@pytest.fixture(scope="session")
def busybox_archive(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """A slim busybox image as a docker-save archive, built once per session."""
    state = tmp_path_factory.mktemp("busybox-image")
    rt = ProcessRuntime("image-builder", state)
    try:
        rt.import_rootfs(IMAGE, [busybox_rootfs()], env=(("PATH", "/bin"),))
        return b"".join(rt.image_export(IMAGE))
    finally:
        rt.close()


@pytest.fixture
def state_dir(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "state"
    yield path
    kill_recorded(path)


@pytest.fixture
def runtime(state_dir: Path, busybox_archive: bytes) -> Iterator[ProcessRuntime]:
    rt = ProcessRuntime("node-test", state_dir)
    rt.image_import([busybox_archive])
    try:
        yield rt
    finally:
        kill_recorded(state_dir)
        rt.close()


@pytest.fixture
def unisolated(tmp_path: Path, busybox_archive: bytes) -> Iterator[ProcessRuntime]:
    """The runtime as a non-root agent has it: no sandbox (the node joins as unisolated)."""
    state = tmp_path / "unisolated"
    rt = ProcessRuntime("node-unisolated", state, isolated=False)
    rt.image_import([busybox_archive])
    try:
        yield rt
    finally:
        kill_recorded(state)
        rt.close()


def host_pid_of(session: int, comm: str) -> int | None:
    """The host pid of the member of ``session`` running ``comm`` (pids inside a
    sandbox are numbered in its own PID namespace)."""
    for st in proc.session_members(session):
        try:
            with open(f"/proc/{st.pid}/comm", encoding="ascii") as fh:
                if fh.read().strip() == comm:
                    return st.pid
        except OSError:
            continue
    return None


def spec(name: str, *command: str, **kw: Any) -> ContainerSpec:
    return ContainerSpec(
        name=name, workload_id=f"acme/app/{name}", image=IMAGE, command=command, **kw
    )


def log_text(rt: ProcessRuntime, name: str) -> str:
    return b"".join(rt.logs(name)).decode()
