"""Node runtimes and the choice between them.

``select_runtime`` imports each runtime module only when it is chosen. (Nothing here
may be bound to the name ``docker``: importing the submodule ``node.runtime.docker``
rebinds that attribute of this package.)
"""

from __future__ import annotations

from pathlib import Path

from node.runtime.base import Runtime
from pki.errors import ConfigError

RUNTIME_KINDS = ("docker", "process")
PROBE_TIMEOUT = 1.0  # seconds; an engine slower than this to ping is treated as absent


def docker_available(timeout: float = PROBE_TIMEOUT) -> bool:
    """True when a Docker Engine (DOCKER_HOST or the default socket) answers within
    ``timeout`` seconds."""
    from node.runtime.docker import engine_available

    return engine_available(timeout)


def resolve_runtime(kind: str | None) -> str:
    """``docker`` or ``process``: ``kind`` itself, or for None/``auto`` docker when an
    engine answers, else process. The one place that choice is made."""
    if kind is None or kind == "auto":
        return "docker" if docker_available() else "process"
    if kind not in RUNTIME_KINDS:
        raise ConfigError(f"runtime must be one of auto, docker, process, got {kind!r}")
    return kind


def select_runtime(kind: str | None, node_id: str, state_dir: Path) -> Runtime:
    """The runtime named ``kind`` (see ``resolve_runtime``)."""
    kind = resolve_runtime(kind)
    if kind == "docker":
        from node.runtime.docker import DockerRuntime

        return DockerRuntime(node_id, state_dir)
    if kind == "process":
        from node.runtime.process import ProcessRuntime

        return ProcessRuntime(node_id, state_dir)
    raise ConfigError(f"unknown runtime {kind!r} (one of: {', '.join(RUNTIME_KINDS)})")
