"""The orchestrator's generation of each container this agent created, so a stale
command (decided before a newer generation of the same workload reached this node:
a delayed retry, an orchestrator restored from an old store) is refused rather than
bringing back an old version next to the new one.

A command is stale when this node still holds a container of the same workload
created with a higher generation. Containers gone since (removed, fenced) no longer
count: an application deleted and applied again starts over at generation 1.

Kept in memory: after an agent restart nothing is known and nothing is refused until
the next create; the orchestrator's epoch in every token covers a restarted
orchestrator.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from node.errors import FailedPrecondition

__all__ = ["GenerationBook"]


class GenerationBook:
    def __init__(self, exists: Callable[[str], bool]) -> None:
        self._exists = exists  # does the runtime still hold this container?
        self._lock = threading.Lock()  # gRPC handlers run on a thread pool
        self._by_container: dict[str, tuple[str, int]] = {}

    def check(self, name: str, workload_id: str, generation: int) -> None:
        """Raise FailedPrecondition when a newer generation of ``workload_id`` is held."""
        if not workload_id or generation <= 0:
            return  # an unversioned command (a direct operator call) is not compared
        with self._lock:
            newer = [
                (c, g)
                for c, (w, g) in self._by_container.items()
                if w == workload_id and g > generation and c != name
            ]
        for container, held in newer:
            if self._exists(container):
                raise FailedPrecondition(
                    f"stale command: generation {generation} of workload {workload_id}, "
                    f"this node holds generation {held} ({container})"
                )
            with self._lock:
                self._by_container.pop(container, None)

    def check_start(self, name: str) -> None:
        with self._lock:
            known = self._by_container.get(name)
        if known is not None:
            self.check(name, *known)

    def record(self, name: str, workload_id: str, generation: int) -> None:
        if workload_id and generation > 0:
            with self._lock:
                self._by_container[name] = (workload_id, generation)

    def forget(self, name: str) -> None:
        with self._lock:
            self._by_container.pop(name, None)
