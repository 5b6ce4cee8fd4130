"""A command joining a running process-runtime sandbox (``capstan exec``), run by the
host's Python as root, with the plan in descriptor ``argv[1]`` (a memory file).

It enters the instance's namespaces (IPC, UTS, network, PID, mount) through the
instance's init (``target``), takes the init's root as its own, then forks: the
child is born in the instance's PID namespace, joins its cgroups (the exec is
charged to the instance's limits), sets the same rlimits and drops privileges
exactly as the instance's own workload did (``_sandbox_init``: no capability, locked
securebits, ``no_new_privs``, the instance's uid and gid), then execs the command.
This process stays as its supervisor and exits with the command's status.

Only the standard library is used (and ``_sandbox_init``, loaded by path).
"""

from __future__ import annotations

import ctypes
import importlib.util
import json
import os
import signal
import sys
from pathlib import Path

NAMESPACES = ("ipc", "uts", "net", "pid", "mnt")  # mnt last: /proc/<pid> is read before


def _init_module() -> object:
    path = Path(__file__).with_name("_sandbox_init.py")
    spec = importlib.util.spec_from_file_location("capstan_sandbox_init", path)
    assert spec is not None and spec.loader is not None  # noqa: S101 - beside this file
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> None:
    init = _init_module()
    with open(int(sys.argv[1]), encoding="utf-8") as fh:
        plan = json.load(fh)
    with open("/proc/sys/kernel/cap_last_cap", encoding="ascii") as fh:
        last_cap = int(fh.read())
    libc = ctypes.CDLL(None, use_errno=True)
    target = int(plan["target"])
    try:
        fds = [os.open(f"/proc/{target}/ns/{ns}", os.O_RDONLY | os.O_CLOEXEC) for ns in NAMESPACES]
        root = os.open(f"/proc/{target}/root", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        cgroup_fds = [os.open(p, os.O_WRONLY | os.O_CLOEXEC) for p in plan["cgroup_procs"]]
        if plan.get("seccomp") is not None:
            # Mapped before the chroot: the host's library directories are gone after it.
            init._seccomp.append(ctypes.CDLL(plan["libseccomp"], use_errno=True))  # type: ignore[attr-defined]
        for fd, ns in zip(fds, NAMESPACES, strict=True):
            if libc.setns(fd, 0) != 0:
                err = ctypes.get_errno()
                raise OSError(err, f"setns {ns}: {os.strerror(err)}")
            os.close(fd)
        os.fchdir(root)
        os.chroot(".")
        os.close(root)
        os.chdir("/")
    except OSError as exc:
        os.write(2, f"capstan: cannot join the instance: {exc}\n".encode())
        os._exit(126)
    signal.pthread_sigmask(signal.SIG_BLOCK, set(init.FORWARDED))  # type: ignore[attr-defined]
    child = os.fork()
    if child == 0:
        init.run_workload(plan, cgroup_fds, last_cap)  # type: ignore[attr-defined]
    for fd in cgroup_fds:
        os.close(fd)
    for signum in init.FORWARDED:  # type: ignore[attr-defined]
        signal.signal(signum, init._forward)  # type: ignore[attr-defined]
    try:
        init.drop_privileges(plan, last_cap)  # type: ignore[attr-defined]
    except (OSError, Exception) as exc:  # SetupError included
        os.write(2, f"capstan: dropping privileges failed: {exc}\n".encode())
        os.kill(child, signal.SIGKILL)
        os._exit(126)
    init.supervise(child)  # type: ignore[attr-defined]


if __name__ == "__main__":
    main()
