"""What the node agent created, kept in SQLite so it survives the agent.

Both runtimes record here every container the agent created: the spec it was
created from, the runtime's id for it, and for runtimes whose workloads are plain
processes the pid *and* the process start time (``/proc/<pid>/stat`` field 22, in
clock ticks since boot). A pid alone is not an identity: pids are reused, and an
agent that re-attached to a recycled pid would stop or report someone else's
process. ``(pid, start_ticks)`` is unique for the life of the host.

Semantics of the recorded fields:

- ``desired`` is what the agent was last asked for: ``created``, ``running`` or
  ``stopped``. A workload that crashed keeps ``desired == "running"``, which is how
  a restarted agent (or the reconciler) tells a crash from a requested stop.
- ``finished_at`` set and ``exit_code`` None means the exit code is unknown: the
  workload died while nobody was waiting for it (the agent was down, or it was a
  re-attached process that is not the agent's child). Runtimes report that as
  ``ContainerState.DEAD``.
- ``record_removed`` deletes the row: a removed container leaves nothing behind
  that could be re-attached or listed twice.

The database is opened in WAL mode with one connection guarded by a lock, so the
agent's gRPC threads may share one ``NodeState``.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from node.errors import AlreadyExists, FailedPrecondition, NotFound, RuntimeFailure
from node.runtime._netspec import net_from_json, net_to_json
from node.runtime.base import ContainerSpec, SecretMount, VolumeMount

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS containers (
    name TEXT PRIMARY KEY,
    workload_id TEXT NOT NULL,
    spec TEXT NOT NULL,
    runtime_id TEXT NOT NULL,
    generation INTEGER NOT NULL,
    desired TEXT NOT NULL,
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    pid INTEGER,
    start_ticks INTEGER,
    exit_code INTEGER
);
"""

DESIRED_STATES = ("created", "running", "stopped")


@dataclass(frozen=True)
class ContainerRecord:
    """One row of the state database."""

    name: str
    workload_id: str
    spec: ContainerSpec
    runtime_id: str
    generation: int
    desired: str
    created_at: float
    started_at: float | None
    finished_at: float | None
    pid: int | None
    start_ticks: int | None
    exit_code: int | None

    @property
    def exit_known(self) -> bool:
        """False when the workload finished but nobody saw its exit code."""
        return self.finished_at is None or self.exit_code is not None


def spec_to_json(spec: ContainerSpec) -> str:
    doc: dict[str, Any] = {
        "name": spec.name,
        "workload_id": spec.workload_id,
        "image": spec.image,
        "command": list(spec.command),
        "env": [list(kv) for kv in spec.env],
        "cpu": spec.cpu,
        "memory": spec.memory,
        "volumes": [
            {"name": v.name, "path": v.path, "read_only": v.read_only} for v in spec.volumes
        ],
        "network": spec.network,
        "labels": [list(kv) for kv in spec.labels],
        "user": spec.user,
        "seccomp": spec.seccomp,
        "cap_add": list(spec.cap_add),
        "low_ports": spec.low_ports,
        # Where the instance's secret files are (a tmpfs path), never their content.
        "secrets": [{"source": m.source, "path": m.path} for m in spec.secrets],
    }
    doc.update(net_to_json(spec.service, spec.ports, spec.links))
    return json.dumps(doc, sort_keys=True, separators=(",", ":"))


def spec_from_json(text: str) -> ContainerSpec:
    doc = json.loads(text)
    service, ports, links = net_from_json(doc)
    return ContainerSpec(
        name=str(doc["name"]),
        workload_id=str(doc["workload_id"]),
        image=str(doc["image"]),
        command=tuple(str(a) for a in doc["command"]),
        env=tuple((str(k), str(v)) for k, v in doc["env"]),
        cpu=float(doc["cpu"]),
        memory=int(doc["memory"]),
        volumes=tuple(
            VolumeMount(name=str(v["name"]), path=str(v["path"]), read_only=bool(v["read_only"]))
            for v in doc["volumes"]
        ),
        network=str(doc["network"]),
        labels=tuple((str(k), str(v)) for k, v in doc["labels"]),
        service=service,
        ports=ports,
        links=links,
        # Absent in records written before the sandbox existed: the defaults.
        user=str(doc.get("user", "")),
        seccomp=str(doc.get("seccomp", "")),
        cap_add=tuple(str(c) for c in doc.get("cap_add", ())),
        low_ports=bool(doc.get("low_ports", False)),
        secrets=tuple(
            SecretMount(source=str(m["source"]), path=str(m["path"]))
            for m in doc.get("secrets", ())
        ),
    )


class NodeState:
    """The agent's durable record of the containers it created (runtime-neutral)."""

    def __init__(self, path: Path, *, clock: Callable[[], float] = time.time) -> None:
        self.path = Path(path)
        self._clock = clock
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # isolation_level=None: we issue BEGIN IMMEDIATE ourselves so a read-modify-write
            # cannot interleave with another writer.
            self._db = sqlite3.connect(
                str(self.path), isolation_level=None, check_same_thread=False, timeout=10.0
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise RuntimeFailure(f"cannot open node state {self.path}: {exc}") from None

    # -- plumbing -------------------------------------------------------------------

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    yield self._db
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                raise RuntimeFailure(f"node state {self.path}: {exc}") from None

    def _update(self, name: str, sql: str, args: tuple[Any, ...]) -> None:
        with self._tx() as db:
            cur = db.execute(sql, (*args, name))
            if cur.rowcount == 0:
                raise NotFound(f"container {name} is not recorded on this node")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- node identity ----------------------------------------------------------------

    def claim_node(self, node_id: str) -> None:
        """Bind the database to one node id; refuse another node's state directory."""
        with self._tx() as db:
            row = db.execute("SELECT value FROM meta WHERE key = 'node_id'").fetchone()
            if row is None:
                db.execute("INSERT INTO meta (key, value) VALUES ('node_id', ?)", (node_id,))
            elif row[0] != node_id:
                raise FailedPrecondition(
                    f"state {self.path} belongs to node {row[0]!r}, not {node_id!r}"
                )

    # -- records --------------------------------------------------------------------

    def record_created(
        self, spec: ContainerSpec, runtime_id: str, generation: int, *, at: float | None = None
    ) -> ContainerRecord:
        when = self._clock() if at is None else at
        with self._tx() as db:
            try:
                db.execute(
                    "INSERT INTO containers (name, workload_id, spec, runtime_id, generation,"
                    " desired, created_at) VALUES (?, ?, ?, ?, ?, 'created', ?)",
                    (spec.name, spec.workload_id, spec_to_json(spec), runtime_id, generation, when),
                )
            except sqlite3.IntegrityError:
                raise AlreadyExists(f"container {spec.name} already exists on this node") from None
        return self.get(spec.name)

    def record_started(
        self,
        name: str,
        pid: int | None = None,
        start_ticks: int | None = None,
        *,
        at: float | None = None,
    ) -> ContainerRecord:
        when = self._clock() if at is None else at
        self._update(
            name,
            "UPDATE containers SET desired = 'running', started_at = ?, finished_at = NULL,"
            " exit_code = NULL, pid = ?, start_ticks = ? WHERE name = ?",
            (when, pid, start_ticks),
        )
        return self.get(name)

    def record_exited(
        self, name: str, exit_code: int | None, at: float, *, pid: int | None = None
    ) -> ContainerRecord:
        """Record the end of a run; ``exit_code`` None means it died unobserved.

        With ``pid``, only the unfinished run of that pid is closed: an observer holding
        a stale record cannot end a run that was started meanwhile.
        """
        if pid is None:
            self._update(
                name,
                "UPDATE containers SET finished_at = ?, exit_code = ? WHERE name = ?",
                (at, exit_code),
            )
        else:
            with self._tx() as db:
                db.execute(
                    "UPDATE containers SET finished_at = ?, exit_code = ?"
                    " WHERE name = ? AND pid = ? AND finished_at IS NULL",
                    (at, exit_code, name, pid),
                )
        return self.get(name)

    def set_desired(self, name: str, desired: str) -> None:
        if desired not in DESIRED_STATES:
            raise ValueError(f"desired state must be one of {DESIRED_STATES}")
        self._update(name, "UPDATE containers SET desired = ? WHERE name = ?", (desired,))

    def set_runtime_id(self, name: str, runtime_id: str) -> None:
        self._update(name, "UPDATE containers SET runtime_id = ? WHERE name = ?", (runtime_id,))

    def record_removed(self, name: str) -> None:
        self._update(name, "DELETE FROM containers WHERE name = ?", ())

    # -- queries --------------------------------------------------------------------

    _COLUMNS = (
        "name, workload_id, spec, runtime_id, generation, desired, created_at, started_at,"
        " finished_at, pid, start_ticks, exit_code"
    )

    @staticmethod
    def _row(row: tuple[Any, ...]) -> ContainerRecord:
        return ContainerRecord(
            name=row[0],
            workload_id=row[1],
            spec=spec_from_json(row[2]),
            runtime_id=row[3],
            generation=row[4],
            desired=row[5],
            created_at=row[6],
            started_at=row[7],
            finished_at=row[8],
            pid=row[9],
            start_ticks=row[10],
            exit_code=row[11],
        )

    def get(self, name: str) -> ContainerRecord:
        found = self.find(name)
        if found is None:
            raise NotFound(f"container {name} is not recorded on this node")
        return found

    def find(self, name: str) -> ContainerRecord | None:
        with self._lock:
            try:
                row = self._db.execute(
                    f"SELECT {self._COLUMNS} FROM containers WHERE name = ?",  # noqa: S608
                    (name,),
                ).fetchone()
            except sqlite3.Error as exc:
                raise RuntimeFailure(f"node state {self.path}: {exc}") from None
        return None if row is None else self._row(row)

    def all(self) -> list[ContainerRecord]:
        with self._lock:
            try:
                rows = self._db.execute(
                    f"SELECT {self._COLUMNS} FROM containers ORDER BY created_at, name"  # noqa: S608
                ).fetchall()
            except sqlite3.Error as exc:
                raise RuntimeFailure(f"node state {self.path}: {exc}") from None
        return [self._row(r) for r in rows]
