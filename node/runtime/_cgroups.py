"""Per-instance cgroups for the process runtime: CPU, memory and PIDs limits.

cgroup v2 (one unified hierarchy with the ``cpu``, ``memory`` and ``pids``
controllers) is used where the host offers it; otherwise the v1 hierarchies of
those controllers, where mounted. A controller the host lacks is reported as such
(``missing``) and the runtime falls back to rlimits for it. Groups live under
``capstan/<node hash>/<container>``: several agents can share one host.

Nothing here moves a process: the sandbox's workload writes itself into the
``cgroup.procs`` files that ``create`` returns, before it execs.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path("/sys/fs/cgroup")
CONTROLLERS = ("cpu", "memory", "pids")
CPU_PERIOD_US = 100_000
_RMDIR_WAIT = 2.0


def _write(path: Path, value: str) -> None:
    with open(path, "w", encoding="ascii") as fh:
        fh.write(value)


@dataclass(frozen=True)
class Limits:
    cpu: float  # cores; 0 = no limit
    memory: int  # bytes; 0 = no limit
    pids: int  # processes; 0 = no limit


class Cgroups:
    """The cgroups of one node's instances."""

    def __init__(self, node_id: str, root: Path = ROOT) -> None:
        self._scope = Path("capstan") / hashlib.sha256(node_id.encode()).hexdigest()[:12]
        self._root = root
        self.version, self._bases = self._detect()

    @property
    def controllers(self) -> tuple[str, ...]:
        """The controllers this host lets us limit with."""
        return tuple(sorted(self._bases))

    @property
    def missing(self) -> tuple[str, ...]:
        return tuple(c for c in CONTROLLERS if c not in self._bases)

    def _detect(self) -> tuple[int, dict[str, Path]]:
        unified = self._root / "cgroup.controllers"
        if unified.is_file():
            try:
                offered = set(unified.read_text(encoding="ascii").split())
            except OSError:
                offered = set()
            base = self._root / self._scope
            found = {c: base for c in CONTROLLERS if c in offered}
            return (2, found) if self._enable_v2(found) else (2, {})
        own = _own_v1_paths()
        found = {}
        for controller in CONTROLLERS:
            mount = self._root / controller
            if not (mount / "cgroup.procs").is_file():
                continue
            parent = mount / own.get(controller, "").lstrip("/")
            if not parent.is_dir():
                parent = mount
            found[controller] = parent / self._scope
        return 1, found

    def _enable_v2(self, found: dict[str, Path]) -> bool:
        """Turn the controllers on down to our scope (v2 delegates them level by level)."""
        if not found:
            return False
        wanted = " ".join(f"+{c}" for c in found)
        level = self._root
        try:
            for part in ("", *self._scope.parts):
                level = level / part if part else level
                level.mkdir(exist_ok=True)
                _write(level / "cgroup.subtree_control", wanted)
        except OSError:
            return False
        return True

    def _weigh_parents(self, base: Path) -> None:
        """Give the node's groups the weight of the host's CPUs (as kubepods has): else
        every instance together would weigh as much as one host process."""
        cpus = len(os.sched_getaffinity(0)) or 1
        level = base
        while level != self._root and level.name:
            with contextlib.suppress(OSError):
                if self.version == 2:
                    _write(level / "cpu.weight", str(min(10_000, 100 * cpus)))
                else:
                    _write(level / "cpu.shares", str(1024 * cpus))
            if level.name == "capstan":
                break
            level = level.parent

    def create(self, name: str, limits: Limits) -> list[str]:
        """Make (or reset) the groups of container ``name``; their ``cgroup.procs`` paths."""
        procs: list[str] = []
        for controller, base in sorted(self._bases.items()):
            group = base / name
            group.mkdir(parents=True, exist_ok=True)
            if controller == "cpu":
                self._weigh_parents(base)
            if self.version == 2:
                if group in (Path(p).parent for p in procs):
                    continue  # one group holds every controller
                self._limit_v2(group, limits)
            else:
                self._limit_v1(controller, group, limits)
            procs.append(str(group / "cgroup.procs"))
        return procs

    def _limit_v2(self, group: Path, limits: Limits) -> None:
        quota = round(limits.cpu * CPU_PERIOD_US) if limits.cpu else 0
        if "cpu" in self._bases:
            _write(group / "cpu.max", f"{quota or 'max'} {CPU_PERIOD_US}")
            # Weighted by the cores requested, as Kubernetes does (1 core = 100).
            _write(group / "cpu.weight", str(max(1, min(10_000, round(limits.cpu * 100))) if
                                              limits.cpu else 100))
        if "memory" in self._bases:
            _write(group / "memory.max", str(limits.memory or "max"))
            with contextlib.suppress(FileNotFoundError):
                _write(group / "memory.swap.max", "0" if limits.memory else "max")
        if "pids" in self._bases:
            _write(group / "pids.max", str(limits.pids or "max"))

    def _limit_v1(self, controller: str, group: Path, limits: Limits) -> None:
        if controller == "cpu":
            _write(group / "cpu.cfs_period_us", str(CPU_PERIOD_US))
            quota = round(limits.cpu * CPU_PERIOD_US) if limits.cpu else -1
            _write(group / "cpu.cfs_quota_us", str(quota))
            # Weighted by the cores requested, as Kubernetes does (1 core = 1024).
            _write(group / "cpu.shares", str(max(2, round(limits.cpu * 1024)) if limits.cpu
                                             else 1024))
        elif controller == "memory":
            value = str(limits.memory) if limits.memory else "-1"
            swap = group / "memory.memsw.limit_in_bytes"
            # memsw must stay >= the memory limit: order the two writes accordingly.
            if limits.memory and swap.exists():
                _write(group / "memory.limit_in_bytes", value)
                _write(swap, value)
            else:
                with contextlib.suppress(FileNotFoundError):
                    _write(swap, "-1")
                _write(group / "memory.limit_in_bytes", value)
        elif controller == "pids":
            _write(group / "pids.max", str(limits.pids) if limits.pids else "max")

    def procs(self, name: str) -> list[str]:
        """The ``cgroup.procs`` paths of container ``name``'s existing groups (to join
        a process to them: ``capstan exec``)."""
        return sorted(
            {
                str(base / name / "cgroup.procs")
                for base in self._bases.values()
                if (base / name / "cgroup.procs").is_file()
            }
        )

    def members(self, name: str) -> list[int]:
        """Pids (host numbering) in the container's groups."""
        pids: set[int] = set()
        for base in set(self._bases.values()):
            with contextlib.suppress(OSError):
                text = (base / name / "cgroup.procs").read_text(encoding="ascii")
                pids.update(int(p) for p in text.split())
        return sorted(pids)

    def remove(self, name: str) -> None:
        """Remove the container's groups once their processes are gone."""
        deadline = time.monotonic() + _RMDIR_WAIT
        for base in set(self._bases.values()):
            group = base / name
            while group.exists():
                try:
                    group.rmdir()
                except FileNotFoundError:
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        break  # left behind; the next create of the name reuses it
                    time.sleep(0.02)


def _own_v1_paths() -> dict[str, str]:
    """This process's v1 group per controller (``/proc/self/cgroup``): we nest below it."""
    paths: dict[str, str] = {}
    try:
        with open("/proc/self/cgroup", encoding="ascii") as fh:
            for line in fh:
                _, controllers, path = line.rstrip("\n").split(":", 2)
                for controller in controllers.split(","):
                    paths[controller] = path
    except (OSError, ValueError):
        return {}
    return paths
