"""Starting a process-runtime instance in its sandbox (the agent's side).

The namespaces come from util-linux ``unshare``; inside them the host's Python runs
``_sandbox_init.py`` as pid 1 with a plan written here (see that module for what it
builds). The process the agent starts, records and signals is ``unshare`` itself:
it stays in the host's PID namespace (so ``(pid, start time)`` re-attachment works
as for any process), it is a member of the instance's network namespace (so
``/proc/<pid>/ns/net`` names it), it passes the init's exit status on, and it
ignores SIGTERM and SIGINT (util-linux blocks them), which reach the init directly.
"""

from __future__ import annotations

import ctypes.util
import functools
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from node.seccomp import profile

INIT_SCRIPT = Path(__file__).with_name("_sandbox_init.py")
_TOOL_PATH = "/usr/bin:/bin:/usr/sbin:/sbin"
UNSHARE = shutil.which("unshare", path=_TOOL_PATH)
# The seccomp profiles are installed with libseccomp where the host has it (Debian:
# libseccomp2, a dependency of systemd); without it the process runtime runs
# instances without a filter and says so in its info.
LIBSECCOMP = ctypes.util.find_library("seccomp")
NAMESPACES = ("--mount", "--uts", "--ipc", "--net", "--pid")
DEFAULT_PIDS = 1024  # processes (threads included) an instance may have at once
TMP_BYTES = 64 << 20  # the writable /tmp of an instance (memory-backed)
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
SCRATCH_DIR = "sandbox"


@functools.cache
def unavailable() -> str | None:
    """Why instances cannot be isolated on this host, or None when they can."""
    if os.geteuid() != 0:
        return "the agent does not run as root"
    if UNSHARE is None:
        return "util-linux unshare is not installed"
    try:
        with open("/proc/filesystems", encoding="ascii") as fh:
            if not any(line.split()[-1:] == ["overlay"] for line in fh):
                return "the kernel has no overlay filesystem"
    except OSError as exc:
        return f"/proc/filesystems: {exc.strerror}"
    try:
        probe = subprocess.run(
            [UNSHARE, *NAMESPACES, "--fork", "--", "/bin/true"],
            capture_output=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return f"unshare failed: {exc}"
    if probe.returncode != 0:
        return "the kernel refused new namespaces: " + probe.stderr.decode(errors="replace")[:200]
    return None


@dataclass(frozen=True)
class Mount:
    source: str  # host path
    path: str  # path inside the instance
    read_only: bool


@dataclass(frozen=True)
class Plan:
    hostname: str
    rootfs: Path
    argv: tuple[str, ...]
    env: dict[str, str]
    cwd: str
    uid: int
    gid: int
    volumes: tuple[Mount, ...]
    files: tuple[Mount, ...]  # single files, bound read-only (e.g. /etc/hosts)
    cgroup_procs: tuple[str, ...]
    rlimits: tuple[tuple[str, int], ...]
    low_ports: bool = False
    seccomp: str = ""  # a profile of node.seccomp ("" = the default)
    host_network: bool = False  # share the node's network namespace (a pool allowed it)


def launch(container_dir: Path, plan: Plan, ready_fd: int) -> tuple[list[str], int]:
    """The argv that runs the sandbox, and the descriptor holding its plan.

    The init writes one byte to ``ready_fd`` once the workload is forked inside
    the finished sandbox; it closes it without writing when the setup failed.

    The plan (environment included) goes through a memory file passed as a
    descriptor, never through the disk or the command line; the caller passes it
    on to the child and closes it afterwards.
    """
    for path in (str(plan.rootfs), str(container_dir)):
        if "," in path or ":" in path:
            # Overlay mount options are split on these characters.
            raise ValueError(f"{path!r}: a state directory path must not contain ',' or ':'")
    scratch = container_dir / SCRATCH_DIR
    scratch.mkdir(mode=0o700, exist_ok=True)
    data = {
        "hostname": plan.hostname,
        "rootfs": str(plan.rootfs),
        "scratch": str(scratch),
        "argv": list(plan.argv),
        "env": plan.env,
        "cwd": plan.cwd,
        "uid": plan.uid,
        "gid": plan.gid,
        "volumes": [
            {"source": m.source, "path": m.path, "read_only": m.read_only} for m in plan.volumes
        ],
        "files": [{"source": m.source, "path": m.path} for m in plan.files],
        "cgroup_procs": list(plan.cgroup_procs),
        "rlimits": [list(r) for r in plan.rlimits],
        "low_ports": plan.low_ports,
        "host_network": plan.host_network,
        "tmp_bytes": TMP_BYTES,
        "seccomp": profile(plan.seccomp) if LIBSECCOMP else None,
        "libseccomp": LIBSECCOMP,
        "ready_fd": ready_fd,
    }
    fd = os.memfd_create("capstan-plan", 0)  # not close-on-exec: the init inherits it
    try:
        os.write(fd, json.dumps(data).encode())
        os.lseek(fd, 0, os.SEEK_SET)
    except OSError:
        os.close(fd)
        raise
    assert UNSHARE is not None  # noqa: S101 - callers check unavailable() first
    namespaces = [n for n in NAMESPACES if not (plan.host_network and n == "--net")]
    argv = [
        UNSHARE,
        *namespaces,
        "--fork",
        "--kill-child",
        "--propagation",
        "private",
        "--",
        sys.executable,
        "-I",
        "-S",
        str(INIT_SCRIPT),
        str(fd),
    ]
    return argv, fd
