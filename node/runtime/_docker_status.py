"""Turning Docker's inspect/stats JSON into the runtime dataclasses."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from node.runtime.base import ContainerState, ContainerStats, ContainerStatus

LABEL_NODE = "capstan.node"
LABEL_WORKLOAD = "capstan.workload"
LABEL_NAME = "capstan.name"
# The ref the spec named: the container itself runs the node-scoped tag of it.
LABEL_IMAGE = "capstan.image"
# The data-plane fields of the spec (service, ports, links) as JSON (runtime/_netspec).
LABEL_NET = "capstan.net"

_STATES = {
    "created": ContainerState.CREATED,
    "running": ContainerState.RUNNING,
    "restarting": ContainerState.RUNNING,
    "paused": ContainerState.RUNNING,
    "exited": ContainerState.EXITED,
    "dead": ContainerState.DEAD,
}
# RFC 3339 with up to nanoseconds, which datetime cannot hold: cut to microseconds.
_TIME_RE = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)$")


def parse_time(value: object) -> float | None:
    """Unix seconds of a Docker timestamp; None for Docker's zero time or garbage."""
    if not isinstance(value, str):
        return None
    match = _TIME_RE.match(value)
    if match is None or match.group(1).startswith("0001-"):
        return None
    frac = (match.group(2) or "")[:6].ljust(6, "0")
    zone = "+00:00" if match.group(3) == "Z" else match.group(3)
    try:
        return datetime.fromisoformat(f"{match.group(1)}.{frac}{zone}").timestamp()
    except ValueError:
        return None


def labels_of(attrs: dict[str, Any]) -> dict[str, str]:
    config = attrs.get("Config") or {}
    labels = config.get("Labels") or {}
    return {str(k): str(v) for k, v in labels.items()}


def status_from_inspect(attrs: dict[str, Any]) -> ContainerStatus:
    labels = labels_of(attrs)
    state_json = attrs.get("State") or {}
    state = _STATES.get(str(state_json.get("Status", "")), ContainerState.UNKNOWN)
    exit_code: int | None = None
    if state in (ContainerState.EXITED, ContainerState.DEAD):
        exit_code = int(state_json.get("ExitCode", 0))
    pid = int(state_json.get("Pid") or 0)
    return ContainerStatus(
        name=labels.get(LABEL_NAME, ""),
        workload_id=labels.get(LABEL_WORKLOAD, ""),
        image=labels.get(LABEL_IMAGE) or str((attrs.get("Config") or {}).get("Image", "")),
        state=state,
        runtime_id=str(attrs.get("Id", "")),
        exit_code=exit_code,
        started_at=parse_time(state_json.get("StartedAt")),
        finished_at=parse_time(state_json.get("FinishedAt")),
        pid=pid if pid > 0 else None,
    )


def stats_from_sample(name: str, sample: dict[str, Any], memory_limit: int) -> ContainerStats:
    """One Docker stats sample, which carries the previous reading in ``precpu_stats``."""
    cpu = sample.get("cpu_stats") or {}
    pre = sample.get("precpu_stats") or {}
    usage = int((cpu.get("cpu_usage") or {}).get("total_usage") or 0)
    pre_usage = int((pre.get("cpu_usage") or {}).get("total_usage") or 0)
    system = int(cpu.get("system_cpu_usage") or 0)
    pre_system = int(pre.get("system_cpu_usage") or 0)
    online = (
        int(cpu.get("online_cpus") or 0)
        or len((cpu.get("cpu_usage") or {}).get("percpu_usage") or ())
        or 1
    )
    fraction = 0.0
    # system_cpu_usage counts all host CPUs, so the ratio times the CPU count is cores.
    if pre_system and system > pre_system and usage >= pre_usage:
        fraction = (usage - pre_usage) / (system - pre_system) * online
    memory = sample.get("memory_stats") or {}
    details = memory.get("stats") or {}
    # Like `docker stats`: page cache that could be dropped is not the workload's use.
    inactive = int(details.get("total_inactive_file", details.get("inactive_file", 0)) or 0)
    used = max(0, int(memory.get("usage") or 0) - inactive)
    return ContainerStats(
        name=name,
        cpu_seconds=usage / 1e9,
        cpu_fraction=fraction,
        memory_bytes=used,
        memory_limit=memory_limit,
    )
