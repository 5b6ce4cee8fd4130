"""The process runtime: workloads as host processes, for hosts without Docker.

Two modes, chosen at construction (``info().extra["isolation"]`` says which):

- **sandbox** (the agent is root and the kernel gives namespaces; the default
  there): each instance gets its own mount, UTS, IPC, network (loopback only) and
  PID namespaces, the image's root filesystem as its read-only root, its volumes
  bind-mounted (read-only ones enforced), a fresh ``/proc``, a tmpfs ``/tmp``, the
  tenant's own non-root uid (``_users``), no capabilities, ``no_new_privs``, and
  cgroup limits for CPU, memory and PIDs where the host has the controllers
  (rlimits for memory and processes otherwise). See ``_sandbox`` and
  ``_sandbox_init``. The command runs with cwd ``/``, ``PATH`` from the image, and
  ``CAPSTAN_VOLUME_<NAME>=<mount path>``.
- **unisolated** (the agent is not root): a process session per workload and an
  address-space rlimit (``RLIMIT_AS``) when the spec sets memory; nothing else.
  The node joins as unisolated and only pools that accept that are placed there.
  Its image's ``bin`` directories come first in ``PATH`` (an absolute command is
  looked up inside the rootfs only); the working directory is
  ``<state_dir>/containers/<name>/work`` and each volume a symlink there
  (``/data`` -> ``work/data``), named in ``CAPSTAN_VOLUME_<NAME>=<host dir>``;
  read-only mounts are refused (they could not be enforced).

In both, the environment is the image's then the spec's, nothing of the agent's;
stdout and stderr both go, unbuffered by us, to ``containers/<name>/output.log``,
written by the workload itself (no relay), which is what lets it keep running, and
logging, while the agent is down or restarted.

State and re-attachment: every container is recorded in ``NodeState``
(``<state_dir>/state.db``) with its pid and process start time (in sandbox mode,
those of the ``unshare`` process that holds the namespaces). A new
``ProcessRuntime`` on the same state directory re-attaches: a recorded process
that still runs (same pid and same start time) is ``RUNNING`` and can be stopped,
followed and measured; one that died meanwhile is ``DEAD`` with ``exit_code``
None, since nobody could wait for it. Exit codes follow Docker: a process killed
by signal N exits with 128 + N. When a workload's first process ends, whatever it
left running is killed, as Docker does when a container's init exits. One agent
at a time may use a state directory (an exclusive ``flock``).
"""

from __future__ import annotations

import builtins
import contextlib
import fcntl
import functools
import io
import json
import os
import platform
import resource
import secrets
import select
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from node.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NodeError,
    NotFound,
    RuntimeFailure,
)
from node.policy import load_policy
from node.runtime import _sandbox, proc
from node.runtime._cgroups import Cgroups, Limits
from node.runtime._exec import PipeExec, in_network_of
from node.runtime._process_images import ImageConfig, ImageStore
from node.runtime._users import TenantUids, tenant_of
from node.runtime.base import (
    ContainerSpec,
    ContainerState,
    ContainerStats,
    ContainerStatus,
    NetSpec,
    RuntimeInfo,
)
from node.seccomp import profile
from node.state import ContainerRecord, NodeState
from node.validation import validate_name, validate_spec, validate_user
from node.volumes import VolumeStore

STATE_DB = "state.db"
LOG_FILE = "output.log"
HOST_PATH = "/usr/local/bin:/usr/bin:/bin"
_ROOTFS_BIN_DIRS = ("bin", "usr/bin", "sbin", "usr/sbin", "usr/local/bin")
_POLL = 0.02
_KILL_GRACE = 5.0
_LOG_CHUNK = 64 * 1024
_STATS_WINDOW = (0.05, 30.0)  # a previous sample this old (s) is good for cpu_fraction

_P = ParamSpec("_P")
_T = TypeVar("_T")


def _mapped(fn: Callable[_P, _T]) -> Callable[_P, _T]:
    """The one boundary where OS errors become node errors."""

    @functools.wraps(fn)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _T:
        try:
            return fn(*args, **kwargs)
        except NodeError:
            raise
        except OSError as exc:
            raise RuntimeFailure(f"process runtime: {exc.strerror or exc}") from None

    return wrapper


def _mapped_iter(it: Iterator[bytes]) -> Iterator[bytes]:
    try:
        yield from it
    except NodeError:
        raise
    except OSError as exc:
        raise RuntimeFailure(f"process runtime: {exc.strerror or exc}") from None


def _exit_code(returncode: int) -> int:
    return 128 - returncode if returncode < 0 else returncode


def volume_env_name(volume: str) -> str:
    return "CAPSTAN_VOLUME_" + "".join(c if c.isalnum() else "_" for c in volume.upper())


class ProcessRuntime:
    """Runs workloads as host processes; see the module docstring for what that means."""

    name = "process"

    def __init__(
        self,
        node_id: str,
        state_dir: Path,
        *,
        clock: Callable[[], float] = time.time,
        max_image_bytes: int | None = None,
        isolated: bool | None = None,
    ) -> None:
        """``isolated`` None: sandboxed exactly when this host allows it (the agent is
        root and the kernel gives namespaces); False: unisolated on purpose (tests of
        that mode); True: refuse to start when it is not possible."""
        reason = _sandbox.unavailable()
        if isolated and reason is not None:
            raise FailedPrecondition(f"the process runtime cannot isolate instances: {reason}")
        self.isolated = reason is None if isolated is None else isolated
        self.unisolated_reason = "" if self.isolated else (reason or "unisolated on request")
        self.node_id = node_id
        self.state_dir = Path(state_dir)
        self._clock = clock
        try:
            self.state_dir.mkdir(parents=True, exist_ok=True)
            self._lock_fd = os.open(
                self.state_dir / "process-runtime.lock", os.O_RDWR | os.O_CREAT, 0o600
            )
        except OSError as exc:
            raise RuntimeFailure(f"state directory {self.state_dir}: {exc.strerror}") from None
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(self._lock_fd)
            raise FailedPrecondition(
                f"state directory {self.state_dir} is in use by another agent"
            ) from None
        try:
            self._state = NodeState(self.state_dir / STATE_DB, clock=clock)
            self._state.claim_node(node_id)
            images_root = self.state_dir / "images"
            self._images = (
                ImageStore(images_root)
                if max_image_bytes is None
                else ImageStore(images_root, max_bytes=max_image_bytes)
            )
            self._volumes = VolumeStore.for_state_dir(self.state_dir)
            (self.state_dir / "containers").mkdir(mode=0o700, exist_ok=True)
            self._uids = TenantUids(self.state_dir)
            self._policy = load_policy(self.state_dir)
            self._cgroups = Cgroups(node_id) if self.isolated else None
        except BaseException:
            self._release_lock()
            raise
        self._children: dict[str, subprocess.Popen[bytes]] = {}
        self._samples: dict[str, tuple[float, float]] = {}
        self._table_lock = threading.Lock()  # guards the dicts and the per-name lock table
        self._refresh_lock = threading.Lock()  # one process-table refresh at a time
        self._name_locks: dict[str, threading.Lock] = {}
        self._closed = False

    # -- plumbing ---------------------------------------------------------------------

    def _release_lock(self) -> None:
        with contextlib.suppress(OSError):
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
        with contextlib.suppress(OSError):
            os.close(self._lock_fd)

    def _name_lock(self, name: str) -> threading.Lock:
        with self._table_lock:
            return self._name_locks.setdefault(name, threading.Lock())

    def _dir(self, name: str) -> Path:
        return self.state_dir / "containers" / name

    def log_path(self, name: str) -> Path:
        return self._dir(name) / LOG_FILE

    def work_dir(self, name: str) -> Path:
        return self._dir(name) / "work"

    def hosts_path(self, name: str) -> Path:
        """The instance's hosts file (its links' names); the sandbox shows it as /etc/hosts."""
        return self._dir(name) / "hosts"

    def _child(self, name: str) -> subprocess.Popen[bytes] | None:
        with self._table_lock:
            return self._children.get(name)

    def _refresh(self, rec: ContainerRecord) -> ContainerRecord:
        """Bring a started, unfinished record up to date with the process table."""
        if rec.pid is None or rec.started_at is None or rec.finished_at is not None:
            return rec
        # One refresher at a time, working from a fresh record: otherwise an observer
        # that read the record before another thread reaped the child finds no child,
        # records "exit status unknown" and the real exit code is lost (regression:
        # a stop under concurrent list() calls reported DEAD instead of 143).
        with self._refresh_lock:
            try:
                rec = self._state.get(rec.name)
            except NotFound:
                return rec
            if rec.pid is None or rec.started_at is None or rec.finished_at is not None:
                return rec
            return self._refresh_locked(rec, rec.pid)

    def _refresh_locked(self, rec: ContainerRecord, pid: int) -> ContainerRecord:
        child = self._child(rec.name)
        code: int | None
        if child is not None and child.pid == pid:
            rc = child.poll()  # also reaps it: our children never linger as zombies
            if rc is None:
                return rec
            code = _exit_code(rc)
        elif proc.is_same_alive(pid, rec.start_ticks):
            return rec
        else:
            code = None  # not our child: its exit status went to someone else
        # The first process is gone: take down anything it left in its session. While a
        # session has members the kernel keeps its number reserved, so a pid now held by
        # a process of another start time means our session is empty: never signal it.
        now_holder = proc.read_stat(pid)
        if now_holder is None or now_holder.start_ticks == rec.start_ticks:
            proc.signal_session(pid, signal.SIGKILL)
        with self._table_lock:
            self._children.pop(rec.name, None)
            self._samples.pop(rec.name, None)
        return self._state.record_exited(rec.name, code, self._clock(), pid=pid)

    def _status(self, rec: ContainerRecord) -> ContainerStatus:
        rec = self._refresh(rec)
        if rec.started_at is None:
            state = ContainerState.CREATED
        elif rec.finished_at is None:
            state = ContainerState.RUNNING
        elif rec.exit_code is None:
            state = ContainerState.DEAD
        else:
            state = ContainerState.EXITED
        return ContainerStatus(
            name=rec.name,
            workload_id=rec.workload_id,
            image=rec.spec.image,
            state=state,
            runtime_id=rec.runtime_id,
            exit_code=rec.exit_code,
            started_at=rec.started_at,
            finished_at=rec.finished_at,
            pid=rec.pid if state is ContainerState.RUNNING else None,
        )

    def _get(self, name: str) -> ContainerRecord:
        validate_name("name", name)
        return self._state.get(name)

    # -- resolving a spec into something to exec ----------------------------------------

    def _argv(self, spec: ContainerSpec, config: ImageConfig) -> list[str]:
        argv = [*config.entrypoint, *(spec.command or config.cmd)]
        if not argv:
            raise InvalidArgument("command", "empty, and the image names no default command")
        return argv

    def _search_path(self, spec: ContainerSpec, rootfs: Path) -> str:
        dirs = [str(rootfs / d) for d in _ROOTFS_BIN_DIRS if (rootfs / d).is_dir()]
        given = dict(spec.env).get("PATH")
        dirs.append(given if given else HOST_PATH)
        return ":".join(dirs)

    def _executable(self, argv0: str, rootfs: Path, search: str) -> str:
        if argv0.startswith("/"):
            # An absolute command names a file of the image, never one of the host.
            candidate = rootfs / argv0.lstrip("/")
            real = os.path.realpath(candidate)
            if (
                os.path.commonpath([real, os.path.realpath(rootfs)]) == os.path.realpath(rootfs)
                and os.path.isfile(real)
                and os.access(real, os.X_OK)
            ):
                return str(candidate)
            raise InvalidArgument("command", f"{argv0!r} is not an executable of the image")
        if "/" in argv0:
            raise InvalidArgument("command", "a relative command path is not supported")
        found = shutil.which(argv0, path=search)
        if found is None:
            raise InvalidArgument("command", f"{argv0!r} is found neither in the image nor on PATH")
        return found

    def _environment(
        self, spec: ContainerSpec, config: ImageConfig, rootfs: Path
    ) -> dict[str, str]:
        env = {k: v for k, v in config.env if k != "PATH"}
        env.update(spec.env)
        env.setdefault("HOME", str(self.work_dir(spec.name)))
        for mount in spec.volumes:
            env[volume_env_name(mount.name)] = str(self._volumes.path(mount.name))
        env["PATH"] = self._search_path(spec, rootfs)
        return env

    def _link_volumes(self, spec: ContainerSpec) -> None:
        work = self.work_dir(spec.name)
        for mount in spec.volumes:
            target = self._volumes.path(mount.name)
            link = work / mount.path.lstrip("/")
            link.parent.mkdir(parents=True, exist_ok=True)
            if link.is_symlink():
                link.unlink()
            elif link.exists():
                raise FailedPrecondition(
                    f"{mount.path} exists in the work directory of {spec.name}; cannot mount there"
                )
            link.symlink_to(target, target_is_directory=True)

    # -- Runtime protocol -------------------------------------------------------------

    @_mapped
    def create(self, spec: ContainerSpec, *, generation: int = 0) -> ContainerStatus:
        validate_spec(spec)
        self._policy.check(spec)  # the node's own ceiling, whatever the token says
        for i, mount in enumerate(spec.volumes):
            if mount.read_only and not self.isolated:
                raise InvalidArgument(
                    f"volumes[{i}].read_only",
                    "an unisolated process runtime cannot enforce read-only mounts",
                )
            self._volumes.path(mount.name)  # NotFound unless the volume exists
        config = self._images.config(spec.image)
        rootfs = self._images.rootfs_dir(config.image_id)
        argv = self._argv(spec, config)
        if spec.cap_add:
            # Every capability is dropped for good before exec; none is given back here.
            raise InvalidArgument("cap_add", "the process runtime gives no capability back")
        if spec.low_ports and spec.network == "host":
            raise InvalidArgument(
                "low_ports", "the process runtime opens low ports in an instance's own network "
                "namespace only (with host networking that takes a capability)"
            )
        if self.isolated:
            self._sandbox_user(spec)
            self._image_executable(argv[0], rootfs, self._sandbox_env(spec, config)["PATH"])
        else:
            self._executable(argv[0], rootfs, self._search_path(spec, rootfs))
        with self._name_lock(spec.name):
            if self._state.find(spec.name) is not None:
                raise AlreadyExists(f"container {spec.name} already exists on this node")
            # A directory without a record is debris of a create that crashed half-way.
            shutil.rmtree(self._dir(spec.name), ignore_errors=True)
            rec = self._state.record_created(spec, "proc-" + secrets.token_hex(8), generation)
            self.work_dir(spec.name).mkdir(parents=True, exist_ok=True)
            self.hosts_path(spec.name).write_text(hosts_file(spec))
            return self._status(rec)

    @_mapped
    def start(self, name: str) -> ContainerStatus:
        self._get(name)
        with self._name_lock(name):
            rec = self._refresh(self._state.get(name))
            if rec.started_at is not None and rec.finished_at is None:
                return self._status(rec)  # already running: starting is idempotent
            spec = rec.spec
            config = self._images.config(spec.image)
            rootfs = self._images.rootfs_dir(config.image_id)
            argv = self._argv(spec, config)
            if self.isolated:
                return self._start_sandboxed(rec, config, rootfs, argv)
            env = self._environment(spec, config, rootfs)
            executable = self._executable(argv[0], rootfs, env["PATH"])
            work = self.work_dir(name)
            work.mkdir(parents=True, exist_ok=True)
            self._link_volumes(spec)
            preexec = None
            if spec.memory > 0:
                # preexec_fn is unsafe in a threaded process (the gRPC server): a child
                # can crash between fork and exec. prlimit(1) sets the limit, then execs.
                if _PRLIMIT:
                    limit = f"--as={spec.memory}"
                    argv, executable = [_PRLIMIT, limit, "--", executable, *argv[1:]], _PRLIMIT
                else:
                    preexec = _rlimits(spec.memory)
            log_fd = os.open(self.log_path(name), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
            try:
                child = subprocess.Popen(
                    argv,
                    executable=executable,
                    stdin=subprocess.DEVNULL,
                    stdout=log_fd,
                    stderr=log_fd,
                    cwd=work,
                    env=env,
                    start_new_session=True,
                    close_fds=True,
                    preexec_fn=preexec,  # noqa: PLW1509 - only calls setrlimit
                )
            except OSError as exc:
                raise RuntimeFailure(f"cannot start {name}: {exc.strerror or exc}") from None
            finally:
                os.close(log_fd)
            return self._record_start(name, child)

    def _record_start(self, name: str, child: subprocess.Popen[bytes]) -> ContainerStatus:
        # The child cannot vanish from /proc before we wait() for it: ticks is set.
        ticks = proc.start_ticks(child.pid)
        with self._table_lock:
            self._children[name] = child
            self._samples.pop(name, None)
        rec = self._state.record_started(name, child.pid, ticks)
        return self._status(rec)

    # -- the sandbox (agent as root) ----------------------------------------------------

    def _sandbox_user(self, spec: ContainerSpec) -> tuple[int, int]:
        given = validate_user("user", spec.user)
        if given is not None:
            return given
        uid = self._uids.uid_for(tenant_of(spec.workload_id))
        return uid, uid

    def _sandbox_env(self, spec: ContainerSpec, config: ImageConfig) -> dict[str, str]:
        env = dict(config.env)
        env.update(spec.env)
        env.setdefault("PATH", _sandbox.DEFAULT_PATH)
        env.setdefault("HOME", "/")
        for mount in spec.volumes:
            # Where the volume is, as the workload sees it (the unisolated mode's
            # variable holds a host path; here the mount path is the truth).
            env[volume_env_name(mount.name)] = mount.path
        return env

    def _image_executable(self, argv0: str, rootfs: Path, search: str) -> None:
        """The command must be a file of the image: the host's are out of sight."""
        if argv0.startswith("/"):
            candidates = [argv0]
        elif "/" in argv0:
            raise InvalidArgument("command", "a relative command path is not supported")
        else:
            dirs = [d for d in search.split(":") if d.startswith("/")]
            candidates = [f"{d.rstrip('/')}/{argv0}" for d in dirs]
        for candidate in candidates:
            # lexists: an image's absolute symlinks point into the image once it is the
            # root; resolving them here would look at the host.
            if ".." not in candidate.split("/") and os.path.lexists(rootfs / candidate.lstrip("/")):
                return
        raise InvalidArgument("command", f"{argv0!r} is not a program of the image")

    def netns_path(self, name: str) -> Path:
        """The network namespace of a running instance (``/proc/<pid>/ns/net``)."""
        rec = self._refresh(self._get(name))
        if not self.isolated:
            raise FailedPrecondition("unisolated instances share the host's network namespace")
        if rec.pid is None or rec.started_at is None or rec.finished_at is not None:
            raise FailedPrecondition(f"container {name} is not running")
        return Path(f"/proc/{rec.pid}/ns/net")

    def _start_sandboxed(
        self, rec: ContainerRecord, config: ImageConfig, rootfs: Path, argv: list[str]
    ) -> ContainerStatus:
        spec = rec.spec
        name = spec.name
        assert self._cgroups is not None  # noqa: S101 - isolated implies cgroups
        uid, gid = self._sandbox_user(spec)
        env = self._sandbox_env(spec, config)
        self._image_executable(argv[0], rootfs, env["PATH"])
        mounts = []
        for mount in spec.volumes:
            source = self._volumes.path(mount.name)
            if not mount.read_only:
                self._volumes.own(mount.name, uid, gid)
            mounts.append(_sandbox.Mount(str(source), mount.path, mount.read_only))
        mounts.extend(_sandbox.Mount(m.source, m.path, True) for m in spec.secrets)
        procs = self._cgroups.create(
            name, Limits(cpu=spec.cpu, memory=spec.memory, pids=_sandbox.DEFAULT_PIDS)
        )
        rlimits: list[tuple[str, int]] = []
        if spec.memory and "memory" in self._cgroups.missing:
            rlimits.append(("RLIMIT_AS", spec.memory))
        if "pids" in self._cgroups.missing:
            # Per uid, so per tenant: the weaker stand-in for a pids cgroup.
            rlimits.append(("RLIMIT_NPROC", _sandbox.DEFAULT_PIDS))
        hosts = self.hosts_path(name)
        plan = _sandbox.Plan(
            hostname=name,
            rootfs=rootfs,
            argv=tuple(argv),
            env=env,
            cwd="/",
            uid=uid,
            gid=gid,
            volumes=tuple(mounts),
            files=(_sandbox.Mount(str(hosts), "/etc/hosts", True),) if hosts.is_file() else (),
            cgroup_procs=tuple(procs),
            rlimits=tuple(rlimits),
            low_ports=spec.low_ports,
            host_network=spec.network == "host",
            seccomp=spec.seccomp,
        )
        ready_r, ready_w = os.pipe()
        try:
            launch, plan_fd = _sandbox.launch(self._dir(name), plan, ready_w)
        except ValueError as exc:
            os.close(ready_r)
            os.close(ready_w)
            raise FailedPrecondition(str(exc)) from None
        try:
            log_fd = os.open(self.log_path(name), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
            try:
                child = subprocess.Popen(
                    launch,
                    stdin=subprocess.DEVNULL,
                    stdout=log_fd,
                    stderr=log_fd,
                    # Names the instance in /proc/<pid>/cwd for an operator.
                    cwd=self._dir(name),
                    env={"PATH": _sandbox.DEFAULT_PATH},
                    start_new_session=True,
                    close_fds=True,
                    pass_fds=(plan_fd, ready_w),
                )
            except OSError as exc:
                os.close(ready_r)
                raise RuntimeFailure(f"cannot start {name}: {exc.strerror or exc}") from None
            finally:
                os.close(log_fd)
        finally:
            os.close(plan_fd)
            os.close(ready_w)
        with os.fdopen(ready_r, "rb") as ready:
            ok = select.select([ready], [], [], _SANDBOX_READY)[0] and ready.read(1) == b"1"
        if not ok:
            _kill_and_reap(child)
            raise RuntimeFailure(f"cannot start {name}: {self._last_log_line(name)}")
        return self._record_start(name, child)

    def _last_log_line(self, name: str) -> str:
        try:
            with open(self.log_path(name), "rb") as fh:
                fh.seek(max(0, fh.seek(0, os.SEEK_END) - 512))
                lines = fh.read().decode(errors="replace").strip().splitlines()
        except OSError:
            lines = []
        return lines[-1] if lines else "the sandbox did not start"

        return self._dir(validate_name("name", name)) / "hosts"

    @_mapped
    def exec(
        self, name: str, command: Sequence[str], *, tty: bool = False, stdin: bool = False
    ) -> PipeExec:
        """``command`` in the running instance ``name``. Isolated: inside its sandbox
        (its namespaces and root, its cgroups, its uid, no privilege: ``_sandbox_exec``).
        Unisolated: beside its first process, with the same programs, environment,
        working directory, memory limit and network namespace."""
        self._get(name)
        if not command:
            raise InvalidArgument("command", "empty")
        with self._name_lock(name):
            rec = self._refresh(self._state.get(name))
            if rec.pid is None or rec.started_at is None or rec.finished_at is not None:
                raise FailedPrecondition(f"container {name!r} is not running")
            spec = rec.spec
            config = self._images.config(spec.image)
            rootfs = self._images.rootfs_dir(config.image_id)
        master: int | None = None
        if tty:
            master, slave = os.openpty()
            streams: dict[str, Any] = {"stdin": slave, "stdout": slave, "stderr": slave}
        else:
            streams = {
                "stdin": subprocess.PIPE if stdin else subprocess.DEVNULL,
                "stdout": subprocess.PIPE,
                "stderr": subprocess.PIPE,
            }
        try:
            if self.isolated:
                child = self._exec_sandboxed(rec, config, rootfs, list(command), streams)
            else:
                child = self._exec_beside(rec, config, rootfs, list(command), streams)
        except BaseException:
            if master is not None:
                os.close(master)
            raise
        finally:
            if tty:
                os.close(streams["stdin"])
        return PipeExec(child, master)

    def _exec_beside(
        self,
        rec: ContainerRecord,
        config: ImageConfig,
        rootfs: Path,
        argv: list[str],
        streams: dict[str, Any],
    ) -> subprocess.Popen[bytes]:
        spec = rec.spec
        env = self._environment(spec, config, rootfs)
        executable = self._executable(argv[0], rootfs, env["PATH"])
        if spec.memory > 0 and _PRLIMIT:
            argv = [_PRLIMIT, f"--as={spec.memory}", "--", executable, *argv[1:]]
            executable = _PRLIMIT

        def popen() -> subprocess.Popen[bytes]:
            return subprocess.Popen(
                argv,
                executable=executable,
                cwd=self.work_dir(spec.name),
                env=env,
                start_new_session=True,
                close_fds=True,
                **streams,
            )

        netns = f"/proc/{rec.pid}/ns/net"
        try:
            own = os.stat(netns).st_ino != os.stat("/proc/self/ns/net").st_ino
            # In the instance's own network namespace when it has one.
            return in_network_of(netns, popen) if own else popen()
        except OSError as exc:
            raise RuntimeFailure(f"cannot exec in {spec.name}: {exc.strerror or exc}") from None

    def _exec_sandboxed(
        self,
        rec: ContainerRecord,
        config: ImageConfig,
        rootfs: Path,
        argv: list[str],
        streams: dict[str, Any],
    ) -> subprocess.Popen[bytes]:
        spec = rec.spec
        assert self._cgroups is not None and rec.pid is not None  # noqa: S101 - isolated, running
        init = proc.children(rec.pid)
        if len(init) != 1:
            raise FailedPrecondition(f"container {spec.name!r} is not running")
        uid, gid = self._sandbox_user(spec)
        env = self._sandbox_env(spec, config)
        self._image_executable(argv[0], rootfs, env["PATH"])
        rlimits: list[tuple[str, int]] = []
        if spec.memory and "memory" in self._cgroups.missing:
            rlimits.append(("RLIMIT_AS", spec.memory))
        if "pids" in self._cgroups.missing:
            rlimits.append(("RLIMIT_NPROC", _sandbox.DEFAULT_PIDS))
        plan = {
            "target": init[0],
            "argv": argv,
            "env": env,
            "cwd": "/",
            "uid": uid,
            "gid": gid,
            "cgroup_procs": self._cgroups.procs(spec.name),
            "rlimits": rlimits,
            # The instance's own seccomp profile: exec gains nothing its workload lacks.
            "seccomp": profile(spec.seccomp) if _sandbox.LIBSECCOMP else None,
            "libseccomp": _sandbox.LIBSECCOMP,
        }
        fd = os.memfd_create("capstan-exec", 0)  # the plan, environment included: no disk
        try:
            os.write(fd, json.dumps(plan).encode())
            os.lseek(fd, 0, os.SEEK_SET)
            return subprocess.Popen(
                [sys.executable, "-I", "-S", str(_SANDBOX_EXEC), str(fd)],
                cwd=self._dir(spec.name),
                env={"PATH": _sandbox.DEFAULT_PATH},
                start_new_session=True,
                close_fds=True,
                pass_fds=(fd,),
                **streams,
            )
        except OSError as exc:
            raise RuntimeFailure(f"cannot exec in {spec.name}: {exc.strerror or exc}") from None
        finally:
            os.close(fd)

    @_mapped
    def stop(self, name: str, timeout: float = 10.0) -> ContainerStatus:
        self._get(name)
        with self._name_lock(name):
            rec = self._refresh(self._state.get(name))
            if rec.desired != "stopped":
                self._state.set_desired(name, "stopped")
            if rec.pid is None or rec.started_at is None or rec.finished_at is not None:
                return self._status(self._state.get(name))
            self._terminate(rec, max(0.0, timeout))
            return self._status(self._state.get(name))

    def _terminate(self, rec: ContainerRecord, timeout: float) -> None:
        """SIGTERM the workload's session, SIGKILL what is left after ``timeout``."""
        assert rec.pid is not None  # noqa: S101 - callers check
        sid = rec.pid
        if timeout > 0:
            proc.signal_session(sid, signal.SIGTERM)
            if self._wait_gone(rec, timeout):
                return
        proc.signal_session(sid, signal.SIGKILL)
        if not self._wait_gone(rec, _KILL_GRACE):
            raise RuntimeFailure(f"{rec.name} did not die after SIGKILL")

    def _wait_gone(self, rec: ContainerRecord, timeout: float) -> bool:
        assert rec.pid is not None  # noqa: S101 - callers check
        deadline = time.monotonic() + timeout
        while True:
            current = self._refresh(self._state.get(rec.name))
            if current.finished_at is not None and not proc.session_members(rec.pid):
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(_POLL)

    @_mapped
    def restart(self, name: str, timeout: float = 10.0) -> ContainerStatus:
        self.stop(name, timeout)
        return self.start(name)

    @_mapped
    def remove(self, name: str, force: bool = False) -> None:
        self._get(name)
        with self._name_lock(name):
            rec = self._refresh(self._state.get(name))
            if rec.pid is not None and rec.started_at is not None and rec.finished_at is None:
                if not force:
                    raise FailedPrecondition(f"container {name} is running; stop it or force")
                self._terminate(rec, 0.0)
            self._state.record_removed(name)
            with self._table_lock:
                self._children.pop(name, None)
                self._samples.pop(name, None)
            shutil.rmtree(self._dir(name), ignore_errors=True)
            if self._cgroups is not None:
                self._cgroups.remove(name)

    @_mapped
    def inspect(self, name: str) -> ContainerStatus:
        return self._status(self._get(name))

    @_mapped
    def list(self) -> builtins.list[ContainerStatus]:
        statuses = []
        for rec in self._state.all():
            with contextlib.suppress(NotFound):  # removed while we were listing
                statuses.append(self._status(rec))
        return statuses

    def secret_owner(self, spec: ContainerSpec) -> tuple[int, int]:
        if not self.isolated:
            # An unisolated instance runs as the agent and sees the agent's files: a
            # secret given to it would be given to everything on the host.
            raise FailedPrecondition("secrets need an isolated node (the agent runs as root)")
        return self._sandbox_user(spec)

    def net_spec(self, name: str) -> NetSpec | None:
        rec = self._refresh(self._get(name))
        if rec.pid is None or rec.started_at is None or rec.finished_at is not None:
            return None
        netns = f"/proc/{rec.pid}/ns/net"
        try:
            isolated = os.stat(netns).st_ino != os.stat("/proc/self/ns/net").st_ino
        except OSError:
            return None  # exited meanwhile
        spec = rec.spec
        return NetSpec(netns, isolated, spec.service, spec.ports, spec.links)

    def record(self, name: str) -> ContainerRecord:
        """The durable record of a container (desired state, generation, spec)."""
        return self._refresh(self._get(name))

    @_mapped
    def logs(self, name: str, *, follow: bool = False, tail: int = 0) -> Iterator[bytes]:
        self._get(name)
        if tail < 0:
            raise InvalidArgument("tail", "must not be negative")
        fh: io.BufferedIOBase
        try:
            fh = open(self.log_path(name), "rb")  # noqa: SIM115 - closed by the generator
        except FileNotFoundError:
            fh = io.BytesIO()  # never started: nothing logged yet
        return _mapped_iter(self._log_stream(name, fh, follow, tail))

    def _running(self, name: str) -> bool:
        rec = self._state.find(name)
        if rec is None:
            return False
        rec = self._refresh(rec)
        return rec.started_at is not None and rec.finished_at is None

    def _log_stream(
        self,
        name: str,
        fh: io.BufferedIOBase,
        follow: bool,
        tail: int,
    ) -> Iterator[bytes]:
        with fh:
            if tail > 0:
                fh.seek(_tail_offset(fh, tail))
            while True:
                chunk = fh.read(_LOG_CHUNK)
                if chunk:
                    yield chunk
                    continue
                if not follow:
                    return
                if not self._running(name):
                    # Exited: whatever it wrote before dying is in the file; drain it.
                    while chunk := fh.read(_LOG_CHUNK):
                        yield chunk
                    return
                time.sleep(_POLL * 2)
                # Nothing new: an empty chunk hands control back to the reader, which
                # may have been told to stop (its call ended) while nothing was logged.
                yield b""

    @_mapped
    def stats(self, name: str) -> ContainerStats:
        rec = self._refresh(self._get(name))
        limit = rec.spec.memory
        if rec.pid is None or rec.started_at is None or rec.finished_at is not None:
            return ContainerStats(name, 0.0, 0.0, 0, limit)
        members = proc.session_members(rec.pid)
        now = time.monotonic()
        cpu = proc.cpu_seconds(members)
        with self._table_lock:
            previous = self._samples.get(name)
        if previous is None or not _STATS_WINDOW[0] <= now - previous[0] <= _STATS_WINDOW[1]:
            # No usable earlier sample: take a second one shortly after the first.
            time.sleep(0.1)
            previous = (now, cpu)
            members = proc.session_members(rec.pid)
            now = time.monotonic()
            cpu = proc.cpu_seconds(members)
        fraction = max(0.0, (cpu - previous[1]) / (now - previous[0]))
        with self._table_lock:
            self._samples[name] = (now, cpu)
        return ContainerStats(
            name=name,
            cpu_seconds=cpu,
            cpu_fraction=fraction,
            memory_bytes=proc.rss_bytes(members),
            memory_limit=limit,
        )

    @_mapped
    def image_exists(self, ref: str) -> bool:
        return self._images.exists(ref)

    @_mapped
    def images(self) -> builtins.list[str]:
        """The refs of the image index (each with its tag); one small file read."""
        return sorted(self._images.refs())

    @_mapped
    def image_ids(self) -> dict[str, str]:
        """``{ref: image id}`` from the image index (one small file read)."""
        return self._images.refs()

    @_mapped
    def image_export(self, ref: str) -> Iterator[bytes]:
        return _mapped_iter(self._images.export(ref))

    @_mapped
    def image_import(self, chunks: Iterable[bytes]) -> builtins.list[str]:
        """Import a docker-save archive (what ``image_export`` and ``docker save`` write)."""
        return self._images.import_archive(chunks)

    @_mapped
    def import_rootfs(
        self,
        ref: str,
        chunks: Iterable[bytes],
        *,
        env: tuple[tuple[str, str], ...] | None = None,
    ) -> builtins.list[str]:
        """Import a plain root filesystem tarball (what ``docker import`` takes) as ``ref``."""
        if env is None:
            return self._images.import_rootfs(ref, chunks)
        return self._images.import_rootfs(ref, chunks, env=env)

    @_mapped
    def info(self) -> RuntimeInfo:
        try:
            cpus = float(len(os.sched_getaffinity(0)))
        except (AttributeError, OSError):
            cpus = float(os.cpu_count() or 1)
        return RuntimeInfo(
            runtime="process",
            version=platform.release(),
            cpus=cpus,
            memory=proc.meminfo_total(),
            extra=self._isolation_facts(),
        )

    def _isolation_facts(self) -> dict[str, str]:
        if not self.isolated:
            return {
                "isolation": "none",
                "unisolated_reason": self.unisolated_reason,
                "cpu_limits": "recorded, not enforced",
                "network": "host (not isolated)",
            }
        assert self._cgroups is not None  # noqa: S101 - isolated implies cgroups
        return {
            "isolation": "sandbox",
            "namespaces": "mount,uts,ipc,net,pid",
            "cgroups": f"v{self._cgroups.version}: {','.join(self._cgroups.controllers) or '-'}",
            "rlimit_fallback": ",".join(self._cgroups.missing) or "-",
            "seccomp": "profiles of node/seccomp" if _sandbox.LIBSECCOMP else
            "none: libseccomp is not installed",
            "network": "own namespace, loopback only",
        }

    def close(self) -> None:
        """Release the state directory; workloads keep running (a new runtime re-attaches)."""
        if self._closed:
            return
        self._closed = True
        with self._table_lock:
            children = list(self._children.values())
            self._children.clear()
        for child in children:
            child.poll()
        self._state.close()
        self._release_lock()


_PRLIMIT = shutil.which("prlimit", path="/usr/bin:/bin")
_SANDBOX_EXEC = Path(__file__).with_name("_sandbox_exec.py")
_SANDBOX_READY = 30.0  # seconds an instance's sandbox may take to be built


def _kill_and_reap(child: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(child.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        child.wait(timeout=_KILL_GRACE)


def hosts_file(spec: ContainerSpec) -> str:
    lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost"]
    lines += [f"{link.address}\t{link.service}" for link in spec.links]
    return "\n".join(lines) + "\n"


def _rlimits(memory: int) -> Callable[[], None]:
    def apply() -> None:
        # Runs between fork and exec: nothing here may take a lock or allocate much.
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))

    return apply


def _tail_offset(fh: io.BufferedIOBase, lines: int) -> int:
    """Offset where the last ``lines`` lines of ``fh`` begin."""
    end = fh.seek(0, os.SEEK_END)
    pos = end
    # The last N lines start after the N-th newline from the end, not counting a
    # final newline (it ends the last line rather than starting an empty one).
    wanted = lines
    block = 8192
    trailing_checked = False
    while pos > 0:
        step = min(block, pos)
        pos -= step
        fh.seek(pos)
        data = fh.read(step)
        idx = len(data)
        if not trailing_checked:
            trailing_checked = True
            if data.endswith(b"\n"):
                idx -= 1
        while True:
            idx = data.rfind(b"\n", 0, idx)
            if idx < 0:
                break
            wanted -= 1
            if wanted == 0:
                return pos + idx + 1
    return 0


def ensure_busybox_image(
    runtime: ProcessRuntime,
    ref: str = "local/busybox:1",
    *,
    busybox: Path = Path("/bin/busybox"),
) -> str:
    """Make ``ref`` a one-layer image of the host's static busybox and its applet links:
    the root filesystem ``docker import`` is given for docker nodes
    (``node.runtime.images.busybox_rootfs``, one builder), so workloads see the same
    programs on docker and process nodes."""
    if runtime.image_exists(ref):
        return ref
    from node.runtime.images import busybox_rootfs

    runtime.import_rootfs(ref, [busybox_rootfs(busybox)], env=(("PATH", "/bin"),))
    return ref
