"""Orchestrator errors. Foreign errors (yaml, sqlite3, OSError) are mapped onto these
at one boundary per module; the control API maps each class to one status code."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from pki.errors import CapstanError, ConfigError


class OrchestratorError(CapstanError):
    """Base of orchestrator errors."""


@dataclass(frozen=True)
class Problem:
    """One thing wrong in a topology file: where (field path, 1-based line) and what."""

    path: str  # e.g. "services.web.replicas"; "" for the document itself
    line: int | None  # None when the problem has no position (e.g. unreadable file)
    message: str

    def format(self, source: str) -> str:
        where = source if self.line is None else f"{source}:{self.line}"
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


class TopologyError(OrchestratorError, ConfigError):
    """A topology file is unreadable or invalid; ``problems`` lists every finding."""

    def __init__(self, source: str, problems: Iterable[Problem]) -> None:
        self.source = source
        self.problems: tuple[Problem, ...] = tuple(problems)
        super().__init__("\n".join(p.format(source) for p in self.problems))


class StoreError(OrchestratorError):
    """The store failed or was misused (bad key, closed, unusable file)."""


class StoreClosed(StoreError):
    """The store is not open (or was closed while a watch was running)."""


class Conflict(StoreError):
    """A compare-and-swap found another revision than expected; nothing was written."""

    def __init__(self, key: str, expected: int, actual: int) -> None:
        super().__init__(f"{key}: expected revision {expected}, found {actual}")
        self.key = key
        self.expected = expected
        self.actual = actual


class LeaseNotFound(StoreError):
    """The lease does not exist: never granted, revoked, or expired."""

    def __init__(self, lease: int) -> None:
        super().__init__(f"lease {lease} does not exist (expired or revoked)")
        self.lease = lease


class Compacted(StoreError):
    """A watch asked for history older than the store keeps; re-list, then watch again."""

    def __init__(self, requested: int, compact_revision: int) -> None:
        super().__init__(
            f"revision {requested} is compacted (history starts at {compact_revision})"
        )
        self.requested = requested
        self.compact_revision = compact_revision


class StoreUnavailable(StoreError):
    """The store did not answer in time or has lost quorum; a write's outcome is unknown."""


class NotLeader(OrchestratorError):
    """This orchestrator does not lead (or no longer does); it wrote nothing.

    ``leader`` is the address of the leader when one is known, else ``""``."""

    def __init__(self, message: str, *, leader: str = "", epoch: int = 0) -> None:
        super().__init__(message)
        self.leader = leader
        self.epoch = epoch


class Unschedulable(OrchestratorError):
    """No node passes the filters; ``reasons`` counts the nodes refused per filter."""

    def __init__(
        self, service: str, reasons: Mapping[str, int], *, placed: Iterable[str] = ()
    ) -> None:
        self.service = service
        self.reasons = dict(reasons)
        self.placed: tuple[str, ...] = tuple(placed)
        total = sum(self.reasons.values())
        if total == 0:
            summary = "no nodes"
        else:
            detail = ", ".join(
                f"{n} {why}"
                for why, n in sorted(self.reasons.items(), key=lambda kv: (-kv[1], kv[0]))
            )
            summary = f"{total} node{'s' if total != 1 else ''}: {detail}"
        super().__init__(f"{service}: unschedulable ({summary})")
        self.summary = summary


class NotFound(OrchestratorError):
    """No such application, workload or node (NOT_FOUND)."""
