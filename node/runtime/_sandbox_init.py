"""The first process of a process-runtime sandbox (run by the host's Python as pid 1).

``unshare`` (util-linux) has already given this process its own mount, UTS, IPC,
network and PID namespaces; it is pid 1 of the new PID namespace and still root.
From the JSON plan read from descriptor ``argv[1]`` (a memory file that
``_sandbox.py`` wrote) it:

1. builds the instance's root: an overlay of the image's root filesystem with a
   tmpfs upper layer (so mount points can be made without touching the image),
   a fresh ``/proc`` (kernel knobs masked or read-only, as Docker does), a tiny
   ``/dev`` of harmless devices, a tmpfs ``/tmp``, the volumes bind-mounted
   (``nosuid,nodev``), then remounts the root read-only;
2. sets the host name, brings ``lo`` up (the only interface of the namespace);
3. ``pivot_root``s into it and detaches the old root: nothing of the host's
   filesystems stays reachable;
4. drops privileges for good: every capability leaves the bounding set, the
   securebits forbid root from regaining them, ``no_new_privs`` is set, then the
   uid/gid become the instance's (never the agent's);
5. forks the workload first: it joins the instance's cgroups (so this init is not
   charged to them), sets its rlimits, drops its privileges as above and execs
   the command; this process drops them too and stays as a minimal init: it forwards signals,
   reaps orphans and exits with the workload's status (128 + N for signal N),
   which takes every other process of the namespace down with it.

Only the standard library is used, and everything is imported before the
pivot: afterwards the host's files (this script's own modules included) are gone.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import json
import os
import platform
import resource
import signal
import socket
import stat
import struct
import sys
from typing import Any

MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 0x40000
MNT_DETACH = 0x2

PR_CAPBSET_DROP = 24
PR_SET_SECUREBITS = 28
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4
# SECBIT_NOROOT, SECBIT_NO_SETUID_FIXUP and SECBIT_NO_CAP_AMBIENT_RAISE, each locked.
SECUREBITS = 0x01 | 0x02 | 0x04 | 0x08 | 0x40 | 0x80

SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1

_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41, "riscv64": 41, "ppc64le": 203, "s390x": 217}

# Docker's masked and read-only /proc paths (moby's oci defaults).
PROC_MASKED = (
    "kcore",
    "keys",
    "latency_stats",
    "timer_list",
    "timer_stats",
    "sched_debug",
    "acpi",
    "scsi",
)
PROC_READ_ONLY = ("bus", "fs", "irq", "sys", "sysrq-trigger")
DEVICES = ("null", "zero", "full", "random", "urandom", "tty")
FORWARDED = (
    signal.SIGTERM,
    signal.SIGINT,
    signal.SIGHUP,
    signal.SIGQUIT,
    signal.SIGUSR1,
    signal.SIGUSR2,
    signal.SIGWINCH,
    signal.SIGCONT,
)

_libc = ctypes.CDLL(None, use_errno=True)


class SetupError(Exception):
    """A step of building the sandbox failed; the workload never ran."""


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise SetupError(f"{what}: {os.strerror(err)}")


def _b(value: str | None) -> bytes | None:
    return None if value is None else value.encode()


def mount(
    source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None
) -> None:
    _check(
        _libc.mount(_b(source), _b(target), _b(fstype), ctypes.c_ulong(flags), _b(data)),
        f"mount {target}",
    )


def bind(source: str, target: str, flags: int) -> None:
    """A bind mount with ``flags`` (MS_RDONLY, MS_NOSUID...) on the new mount point."""
    mount(source, target, None, MS_BIND)
    mount(None, target, None, MS_REMOUNT | MS_BIND | flags)


def prctl(option: int, arg: int, arg3: int = 0) -> None:
    _check(_libc.prctl(option, ctypes.c_ulong(arg), ctypes.c_ulong(arg3), 0, 0), f"prctl {option}")


def inside(root: str, path: str, *, directory: bool) -> str:
    """Create ``path`` under ``root`` as a mount point, never through a symlink.

    The image is the tenant's: a symlink in it must not turn a mount point (or the
    directory created for one) into a path of the host.
    """
    current = root
    parts = [p for p in path.split("/") if p]
    for i, part in enumerate(parts):
        current = os.path.join(current, part)
        last = i == len(parts) - 1
        try:
            st = os.lstat(current)
        except FileNotFoundError:
            if last and not directory:
                os.close(os.open(current, os.O_CREAT | os.O_WRONLY | os.O_NOFOLLOW, 0o644))
            else:
                os.mkdir(current, 0o755)
            continue
        if stat.S_ISLNK(st.st_mode):
            raise SetupError(f"{path}: the image has a symlink at /{'/'.join(parts[: i + 1])}")
        if not last and not stat.S_ISDIR(st.st_mode):
            raise SetupError(f"{path}: /{'/'.join(parts[: i + 1])} is not a directory")
    return current


def build_root(plan: dict[str, Any]) -> str:
    scratch = plan["scratch"]
    mount(None, "/", None, MS_REC | MS_PRIVATE)
    mount("capstan", scratch, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0700,size=16m")
    upper, work, root = (os.path.join(scratch, d) for d in ("upper", "work", "root"))
    for d in (upper, work, root):
        os.mkdir(d, 0o755)
    mount(
        "overlay",
        root,
        "overlay",
        MS_NOSUID | MS_NODEV,
        f"lowerdir={plan['rootfs']},upperdir={upper},workdir={work}",
    )

    proc = inside(root, "/proc", directory=True)
    mount("proc", proc, "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    for name in PROC_MASKED:
        path = os.path.join(proc, name)
        if os.path.isdir(path):
            mount("none", path, "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=0")
        elif os.path.exists(path):
            bind("/dev/null", path, MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC)
    for name in PROC_READ_ONLY:
        path = os.path.join(proc, name)
        if os.path.exists(path):
            bind(path, path, MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC)

    dev = inside(root, "/dev", directory=True)
    mount("none", dev, "tmpfs", MS_NOSUID | MS_NOEXEC, "mode=0755,size=64k")
    for name in DEVICES:
        node = os.path.join(dev, name)
        os.close(os.open(node, os.O_CREAT | os.O_WRONLY, 0o666))
        bind(f"/dev/{name}", node, MS_NOSUID | MS_NOEXEC)
    for link, target in (
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ):
        os.symlink(target, os.path.join(dev, link))
    shm = os.path.join(dev, "shm")
    os.mkdir(shm, 0o755)
    mount("shm", shm, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=1777,size=64m")
    mount(None, dev, None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NOEXEC, "mode=0755,size=64k")

    tmp = inside(root, "/tmp", directory=True)  # noqa: S108 - the instance's own /tmp
    mount("tmp", tmp, "tmpfs", MS_NOSUID | MS_NODEV, f"mode=1777,size={plan['tmp_bytes']}")

    for volume in plan["volumes"]:
        target = inside(root, volume["path"], directory=True)
        flags = MS_NOSUID | MS_NODEV | (MS_RDONLY if volume["read_only"] else 0)
        bind(volume["source"], target, flags)
    for extra in plan["files"]:
        target = inside(root, extra["path"], directory=False)
        bind(extra["source"], target, MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC)

    # The root itself read-only: what a workload may write is /tmp and its volumes.
    mount(None, root, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)
    return root


def network(plan: dict[str, Any]) -> None:
    name = plan["hostname"].encode()
    _check(_libc.sethostname(name, len(name)), "sethostname")
    if plan["host_network"]:
        return  # the node's own namespace: nothing of it is ours to change
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        req = struct.pack("16sH14x", b"lo", 0)
        flags = struct.unpack("16sH14x", fcntl.ioctl(sock, SIOCGIFFLAGS, req))[1]
        fcntl.ioctl(sock, SIOCSIFFLAGS, struct.pack("16sH14x", b"lo", flags | IFF_UP))
    if plan["low_ports"]:
        # Per network namespace: only this instance's own loopback is concerned.
        with open("/proc/sys/net/ipv4/ip_unprivileged_port_start", "w") as fh:
            fh.write("0")


def pivot(root: str) -> None:
    number = _PIVOT_ROOT.get(platform.machine())
    if number is None:
        raise SetupError(f"pivot_root: unknown architecture {platform.machine()}")
    os.chdir(root)
    # pivot_root(".", ".") stacks the old root under the new one; detaching it then
    # leaves no path back to the host's filesystems.
    _check(_libc.syscall(number, b".", b"."), "pivot_root")
    _check(_libc.umount2(b".", MNT_DETACH), "umount old root")
    os.chdir("/")


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


_LINUX_CAPABILITY_VERSION_3 = 0x20080522


def clear_capabilities() -> None:
    """Empty this process's effective, permitted and inheritable sets. SECBIT_NO_SETUID_FIXUP
    (set so a uid change cannot be undone) also stops the kernel from clearing them on
    setresuid: without this, the init that stays as pid 1 kept nearly every capability
    (regression)."""
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    _check(_libc.capset(ctypes.byref(header), data), "capset")


def drop_privileges(plan: dict[str, Any], last_cap: int) -> None:
    for cap in range(last_cap + 1):
        try:
            prctl(PR_CAPBSET_DROP, cap)
        except SetupError:
            if ctypes.get_errno() != errno.EINVAL:
                raise
    prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL)
    prctl(PR_SET_SECUREBITS, SECUREBITS)
    prctl(PR_SET_NO_NEW_PRIVS, 1)
    os.setgroups([])
    os.setresgid(plan["gid"], plan["gid"], plan["gid"])
    os.setresuid(plan["uid"], plan["uid"], plan["uid"])
    clear_capabilities()


class _ArgCmp(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int),
                ("datum_a", ctypes.c_uint64), ("datum_b", ctypes.c_uint64)]


_SCMP_OPS = {"SCMP_CMP_NE": 1, "SCMP_CMP_LT": 2, "SCMP_CMP_LE": 3, "SCMP_CMP_EQ": 4,
             "SCMP_CMP_GE": 5, "SCMP_CMP_GT": 6, "SCMP_CMP_MASKED_EQ": 7}
_SCMP_ALLOW = 0x7FFF0000
_SCMP_ERRNO = 0x00050000
EPERM = 1


def _action(name: str, errno_ret: int) -> int:
    if name == "SCMP_ACT_ALLOW":
        return _SCMP_ALLOW
    if name == "SCMP_ACT_ERRNO":
        return _SCMP_ERRNO | (errno_ret & 0xFFFF)
    raise SetupError(f"seccomp: action {name} is not supported")


def load_seccomp(lib: ctypes.CDLL, profile: dict[str, Any]) -> None:
    """Install a Docker-format seccomp profile (native architecture) with libseccomp.

    Last step before exec: after it, only what the profile allows may be called."""
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_rule_add_array.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int,
                                           ctypes.c_uint, ctypes.POINTER(_ArgCmp)]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_load.argtypes = [ctypes.c_void_p]
    default = _action(profile["defaultAction"], profile.get("defaultErrnoRet", EPERM))
    ctx = lib.seccomp_init(default)
    if not ctx:
        raise SetupError("seccomp_init failed")
    for rule in profile["syscalls"]:
        action = _action(rule["action"], rule.get("errnoRet", EPERM))
        args = rule.get("args") or []
        array = (_ArgCmp * max(1, len(args)))(*[
            _ArgCmp(a["index"], _SCMP_OPS[a["op"]], a["value"], a.get("valueTwo", 0))
            for a in args
        ])
        for name in rule["names"]:
            number = lib.seccomp_syscall_resolve_name(name.encode())
            if number < 0:
                continue  # not a system call of this architecture
            result = lib.seccomp_rule_add_array(ctx, action, number, len(args), array)
            if result < 0:
                raise SetupError(f"seccomp rule for {name}: {os.strerror(-result)}")
    result = lib.seccomp_load(ctx)
    if result < 0:
        raise SetupError(f"seccomp_load: {os.strerror(-result)}")


def run_workload(plan: dict[str, Any], cgroup_fds: list[int], last_cap: int) -> None:
    """In the forked child: cgroups, rlimits, privileges, then exec. Never returns."""
    try:
        for fd in cgroup_fds:
            # A number in cgroup.procs is read in the writer's PID namespace: 0 = self.
            os.write(fd, b"0")
            os.close(fd)
        for name, value in plan["rlimits"]:
            resource.setrlimit(getattr(resource, name), (value, value))
        drop_privileges(plan, last_cap)
        for signum in FORWARDED:
            signal.signal(signum, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_SETMASK, set())
        os.chdir(plan["cwd"])
        if plan.get("seccomp") is not None:
            load_seccomp(_seccomp[0], plan["seccomp"])
        os.execvpe(plan["argv"][0], plan["argv"], plan["env"])  # noqa: S606 - the workload
    except SetupError as exc:
        os.write(2, f"capstan: sandbox setup failed: {exc}\n".encode())
        os._exit(126)
    except OSError as exc:
        os.write(2, f"capstan: cannot run {plan['argv'][0]!r}: {exc.strerror}\n".encode())
    os._exit(127)


_seccomp: list[ctypes.CDLL] = []  # libseccomp, loaded before the pivot
_early: list[int] = []  # signals that came before the workload existed
_child: list[int] = []  # the workload's pid, once forked


def _forward(signum: int, _frame: object) -> None:
    if not _child:
        _early.append(signum)
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(_child[0], signum)


def supervise(child: int) -> None:
    """Forward signals to the workload, reap orphans, exit with the workload's status."""
    _child.append(child)
    for signum in _early:
        _forward(signum, None)
    signal.pthread_sigmask(signal.SIG_SETMASK, set())
    while True:
        try:
            pid, status = os.waitpid(-1, 0)
        except ChildProcessError:
            os._exit(0)
        except InterruptedError:
            continue
        if pid == child:
            if os.WIFSIGNALED(status):
                os._exit(128 + os.WTERMSIG(status))
            os._exit(os.WEXITSTATUS(status))


def main() -> None:
    # unshare leaves SIGTERM and SIGINT blocked: take them from the start, so that a
    # stop that comes while the sandbox is being built is not lost.
    for signum in FORWARDED:
        signal.signal(signum, _forward)
    signal.pthread_sigmask(signal.SIG_SETMASK, set())
    with open(int(sys.argv[1]), encoding="utf-8") as fh:  # a memory file; closed here
        plan = json.load(fh)
    with open("/proc/sys/kernel/cap_last_cap", encoding="ascii") as fh:
        last_cap = int(fh.read())
    try:
        root = build_root(plan)
        network(plan)
        # Opened before the pivot (the host's cgroup files are gone afterwards) and
        # written by the workload alone, so that this init is not charged to them.
        cgroup_fds = [os.open(p, os.O_WRONLY | os.O_CLOEXEC) for p in plan["cgroup_procs"]]
        if plan["seccomp"] is not None:
            # Found and mapped now: the host's library directories are gone after the pivot.
            _seccomp.append(ctypes.CDLL(plan["libseccomp"], use_errno=True))
        pivot(root)
    except (SetupError, OSError) as exc:
        os.write(2, f"capstan: sandbox setup failed: {exc}\n".encode())
        os._exit(126)
    # Blocked across the fork: the child resets its handlers before anything is
    # delivered to it, the parent forwards what came meanwhile.
    signal.pthread_sigmask(signal.SIG_BLOCK, set(FORWARDED))
    ready = int(plan["ready_fd"])
    os.set_inheritable(ready, False)  # the workload never holds it
    # Closed by the workload's exec (or its exit): this init drops its own privileges
    # only once the workload has dropped its, so that it can always signal it.
    exec_r, exec_w = os.pipe2(os.O_CLOEXEC)
    child = os.fork()
    if child == 0:
        os.close(exec_r)
        run_workload(plan, cgroup_fds, last_cap)
    os.close(exec_w)
    for fd in cgroup_fds:
        os.close(fd)
    # The agent's start() returns once this byte arrives: the namespaces are there,
    # lo is up and a stop can no longer miss the workload.
    os.write(ready, b"1")
    os.close(ready)
    while os.read(exec_r, 1):
        pass  # nothing is ever written: the read ends at the workload's exec or exit
    os.close(exec_r)
    try:
        drop_privileges(plan, last_cap)
    except (SetupError, OSError) as exc:
        os.write(2, f"capstan: dropping privileges failed: {exc}\n".encode())
        os.kill(child, signal.SIGKILL)
        os._exit(126)
    supervise(child)


if __name__ == "__main__":
    main()
