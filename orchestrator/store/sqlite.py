"""The embedded store: one SQLite file, one orchestrator process.

Design choices:

- **One thread owns the connection.** Every operation is a function run on a
  single-worker executor, so operations are serialized (one writer, no SQLite busy
  handling) and the event loop never blocks on disk.
- **WAL + locking_mode=EXCLUSIVE.** WAL makes commits an append; the exclusive lock
  makes a second process opening the same file fail at once instead of writing
  behind this process's back (its watches would miss those writes).
- **synchronous=FULL.** With WAL, NORMAL survives a process crash but may lose the
  last acknowledged commits on power loss. An orchestrator acknowledges writes
  that other parties act on (an assignment, an audit entry, a leader epoch), so a
  write is on disk before it is acknowledged.
- **Group commit.** Writes that arrive while the worker is busy are run together
  in one SQLite transaction, each in its own savepoint (a refused compare or a
  failed write rolls back that write alone), and committed with one fsync; every
  caller is answered only after that commit. Each write still gets its own
  revision and sees the writes before it, exactly as if they ran one by one, but
  a thousand concurrent writes cost a few fsyncs instead of a thousand.
- **Revisions like etcd.** A global counter bumped once per committed write; watch
  history is an ``events`` table trimmed to the last ``history`` revisions.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import threading
import time
from collections import deque
from collections.abc import AsyncGenerator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from orchestrator.errors import Compacted, Conflict, LeaseNotFound, StoreClosed, StoreError
from orchestrator.store import (
    Compare,
    Delete,
    Entry,
    Event,
    EventType,
    Lease,
    Put,
    RangeResult,
    TxnOp,
    TxnResponse,
    TxnResult,
)
from orchestrator.store._checks import check_put, check_ttl, check_txn
from orchestrator.store.keys import check_key, prefix_end

T = TypeVar("T")

SCHEMA_VERSION = 1
DEFAULT_HISTORY = 10_000
_WATCH_BATCH = 256
# Writes committed together at most (one transaction, one fsync).
_GROUP_MAX = 256
DEFAULT_WATCH_BUFFER = 10_000
_GET_SQL = "SELECT key, value, mod_revision, create_revision, version, lease FROM kv WHERE key = ?"
# LIMIT -1 is SQLite for "no limit".
_RANGE_SQL = (
    "SELECT key, value, mod_revision, create_revision, version, lease FROM kv "
    "WHERE key >= ? AND key < ? ORDER BY key LIMIT ?"
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS kv (
    key TEXT PRIMARY KEY,
    value BLOB NOT NULL,
    create_revision INTEGER NOT NULL,
    mod_revision INTEGER NOT NULL,
    version INTEGER NOT NULL,
    lease INTEGER
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS kv_lease ON kv(lease) WHERE lease IS NOT NULL;
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    revision INTEGER NOT NULL,
    type TEXT NOT NULL,
    key TEXT NOT NULL,
    value BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS events_revision ON events(revision);
CREATE TABLE IF NOT EXISTS leases (
    id INTEGER PRIMARY KEY,
    ttl REAL NOT NULL,
    expires_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS leases_expiry ON leases(expires_at);
"""


class _Write:
    """One write transaction: allocates the new revision on its first change only."""

    def __init__(self, db: sqlite3.Connection, revision: int) -> None:
        self.db = db
        self.base = revision
        self.revision = revision
        self.events: list[_Row] = []

    def bump(self) -> int:
        if self.revision == self.base:
            self.revision = self.base + 1
        return self.revision

    def event(self, kind: EventType, key: str, value: bytes) -> None:
        cursor = self.db.execute(
            "INSERT INTO events(revision, type, key, value) VALUES (?, ?, ?, ?)",
            (self.bump(), kind.value, key, value),
        )
        self.events.append((int(cursor.lastrowid or 0), self.revision, kind.value, key, value))


_Row = tuple[int, int, str, str, bytes]  # seq, revision, type, key, value


class _Watcher:
    """A watch's mailbox: events committed after it was created, pushed by the loop.

    While the consumer keeps up, events come from here (no disk reads, and no
    history needed: a caught-up watcher is never compacted). If it falls more than
    ``limit`` events behind, the mailbox is dropped and the watch catches up from
    the history table instead, which may be compacted by then (like etcd).
    """

    def __init__(self, prefix: str, end: str, limit: int) -> None:
        self.prefix = prefix
        self.end = end
        self.limit = limit
        self.queue: deque[_Row] = deque()
        self.overflowed = False
        self.wakeup = asyncio.Event()

    def push(self, rows: list[_Row]) -> None:
        matched = [r for r in rows if self.prefix <= r[3] < self.end]
        if not matched:
            return
        if len(self.queue) + len(matched) > self.limit:
            self.queue.clear()
            self.overflowed = True
        else:
            self.queue.extend(matched)
        self.wakeup.set()


class SqliteStore:
    """The ``Store`` interface on one SQLite file. Bound to the event loop that opens it."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        clock: Callable[[], float] = time.time,
        history: int = DEFAULT_HISTORY,
        watch_buffer: int = DEFAULT_WATCH_BUFFER,
    ) -> None:
        if history < 1 or watch_buffer < 1:
            raise StoreError("history and watch_buffer must be >= 1")
        self._watch_buffer = watch_buffer
        self.path = Path(path)
        self._clock = clock
        self._history = history
        self._executor: ThreadPoolExecutor | None = None
        self._db: sqlite3.Connection | None = None
        # Written only by the worker thread; read by the loop after a call completes.
        self._revision = 0
        self._compact_revision = 1
        # Rows committed by the worker, handed to watchers by the loop in commit order.
        self._committed: list[_Row] = []
        self._committed_lock = threading.Lock()
        self._watchers: set[_Watcher] = set()
        self._closed = False
        # Group commit: writes waiting for the worker, and whether a drain is queued.
        self._queued: list[tuple[Callable[[_Write], Any], asyncio.Future[Any]]] = []
        self._queued_lock = threading.Lock()
        self._draining = False

    async def __aenter__(self) -> SqliteStore:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- plumbing ----------------------------------------------------------------

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        if self._executor is None or self._closed:
            raise StoreClosed("the store is not open")
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self._executor, fn, *args)
        # Wake watchers even when the awaiting caller is cancelled mid-write.
        future.add_done_callback(lambda _: self._notify())
        try:
            return await future
        except sqlite3.Error as exc:
            raise _store_error(exc, self.path) from None

    def _notify(self) -> None:
        with self._committed_lock:
            rows, self._committed = self._committed, []
        for watcher in self._watchers:
            if rows:
                watcher.push(rows)
            if self._closed:
                watcher.wakeup.set()

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise StoreClosed("the store is not open")
        return self._db

    def _write(self, fn: Callable[[_Write], T]) -> T:
        """Run ``fn`` in one IMMEDIATE transaction; commit the revision only if it changed."""
        db = self._conn()
        db.execute("BEGIN IMMEDIATE")
        try:
            w = _Write(db, self._revision)
            result = fn(w)
            if w.revision != w.base:
                db.execute("UPDATE meta SET value = ? WHERE name = 'revision'", (w.revision,))
                floor = w.revision - self._history + 1
                if floor > self._compact_revision:
                    self._compact_locked(db, floor)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            self._load_meta(db)
            raise
        self._revision = w.revision
        if w.events:
            with self._committed_lock:
                self._committed.extend(w.events)
        return result

    async def _grouped(self, run: Callable[[_Write], T]) -> T:
        """Run write ``run`` in the next group commit; its result once that commits."""
        if self._executor is None or self._closed:
            raise StoreClosed("the store is not open")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        with self._queued_lock:
            self._queued.append((run, future))
            start, self._draining = not self._draining, True
        if start:
            try:
                self._executor.submit(self._drain, loop)
            except RuntimeError:  # shut down between the check above and now
                raise StoreClosed("the store is not open") from None
        try:
            return await future
        except sqlite3.Error as exc:
            raise _store_error(exc, self.path) from None

    def _drain(self, loop: asyncio.AbstractEventLoop) -> None:
        """Worker thread: commit queued writes in groups until none is left."""
        while True:
            with self._queued_lock:
                batch = self._queued[:_GROUP_MAX]
                del self._queued[:_GROUP_MAX]
                if not batch:
                    self._draining = False
                    return
            try:
                self._expire_due()
                outcomes = self._write_group([run for run, _ in batch])
            except BaseException as exc:  # the database is gone (closed, I/O error)
                outcomes = [(False, exc)] * len(batch)
            for (_, future), outcome in zip(batch, outcomes, strict=True):
                loop.call_soon_threadsafe(_settle, future, outcome)
            loop.call_soon_threadsafe(self._notify)

    def _write_group(self, runs: list[Callable[[_Write], Any]]) -> list[tuple[bool, Any]]:
        """Run every write in one transaction, each in a savepoint; one COMMIT."""
        db = self._conn()
        db.execute("BEGIN IMMEDIATE")
        outcomes: list[tuple[bool, Any]] = []
        events: list[_Row] = []
        try:
            for run in runs:
                db.execute("SAVEPOINT one_write")
                w = _Write(db, self._revision)
                try:
                    result = run(w)
                    if w.revision != w.base:
                        db.execute(
                            "UPDATE meta SET value = ? WHERE name = 'revision'", (w.revision,)
                        )
                        floor = w.revision - self._history + 1
                        if floor > self._compact_revision:
                            self._compact_locked(db, floor)
                    db.execute("RELEASE one_write")
                except Exception as exc:
                    db.execute("ROLLBACK TO one_write")
                    db.execute("RELEASE one_write")
                    self._load_meta(db)  # the compaction floor may have moved back
                    outcomes.append((False, exc))
                    continue
                self._revision = w.revision
                events.extend(w.events)
                outcomes.append((True, result))
            db.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
            self._load_meta(db)
            raise
        if events:
            with self._committed_lock:
                self._committed.extend(events)
        return outcomes

    def _load_meta(self, db: sqlite3.Connection) -> None:
        meta = dict(db.execute("SELECT name, value FROM meta").fetchall())
        self._revision = int(meta["revision"])
        self._compact_revision = int(meta["compact_revision"])

    def _compact_locked(self, db: sqlite3.Connection, revision: int) -> None:
        db.execute("DELETE FROM events WHERE revision < ?", (revision,))
        db.execute("UPDATE meta SET value = ? WHERE name = 'compact_revision'", (revision,))
        self._compact_revision = revision

    def _expire_due(self) -> list[int]:
        """Expire leases whose time has come (worker thread), before any other operation."""
        db = self._conn()
        now = self._clock()
        due = [row[0] for row in db.execute("SELECT id FROM leases WHERE expires_at <= ?", (now,))]
        if not due:
            return []

        def run(w: _Write) -> list[int]:
            for lease_id in due:
                self._drop_lease(w, lease_id)
            return due

        return self._write(run)

    def _drop_lease(self, w: _Write, lease_id: int) -> int:
        keys = [
            row[0]
            for row in w.db.execute("SELECT key FROM kv WHERE lease = ? ORDER BY key", (lease_id,))
        ]
        for key in keys:
            w.db.execute("DELETE FROM kv WHERE key = ?", (key,))
            w.event(EventType.DELETE, key, b"")
        w.db.execute("DELETE FROM leases WHERE id = ?", (lease_id,))
        return len(keys)

    def _op(self, fn: Callable[..., T], *args: Any) -> T:
        self._expire_due()
        return fn(*args)

    # -- lifecycle ---------------------------------------------------------------

    async def open(self) -> None:
        if self._executor is not None:
            raise StoreError("the store is already open")
        if self._closed:
            raise StoreClosed("a closed store cannot be reopened; make a new one")
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="capstan-sqlite")
        try:
            await self._call(self._open_db)
        except BaseException:
            await self._shutdown()
            raise

    def _open_db(self) -> None:
        if not self.path.parent.is_dir():
            raise StoreError(f"directory {self.path.parent} does not exist")
        if not self.path.exists():
            # The store holds the cluster's desired state: readable by its owner only.
            with contextlib.suppress(FileExistsError):
                os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        db = sqlite3.connect(self.path, isolation_level=None, timeout=0)
        try:
            db.execute("PRAGMA locking_mode = EXCLUSIVE")
            mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StoreError(f"{self.path}: cannot switch to WAL journaling (got {mode})")
            db.execute("PRAGMA synchronous = FULL")
            db.execute("BEGIN IMMEDIATE")  # takes the exclusive lock now, not at first write
            for statement in filter(str.strip, _SCHEMA.split(";")):
                db.execute(statement)
            for name, initial in (
                ("schema_version", SCHEMA_VERSION),
                ("revision", 0),
                ("compact_revision", 1),
                ("lease_seq", 0),
            ):
                db.execute("INSERT OR IGNORE INTO meta(name, value) VALUES (?, ?)", (name, initial))
            version = db.execute("SELECT value FROM meta WHERE name = 'schema_version'").fetchone()[
                0
            ]
            if version != SCHEMA_VERSION:
                raise StoreError(
                    f"{self.path}: schema version {version}, expected {SCHEMA_VERSION}"
                )
            db.execute("COMMIT")
            self._load_meta(db)
        except BaseException:
            db.close()
            raise
        self._db = db

    async def close(self) -> None:
        if self._executor is None:
            self._closed = True
            return
        with contextlib.suppress(StoreError):
            await self._call(self._close_db)
        self._closed = True
        self._notify()
        await self._shutdown()

    def _close_db(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    async def _shutdown(self) -> None:
        executor, self._executor = self._executor, None
        if executor is not None:
            await asyncio.get_running_loop().run_in_executor(None, executor.shutdown)

    # -- reads -------------------------------------------------------------------

    async def revision(self) -> int:
        return await self._call(self._op, lambda: self._revision)

    async def get(self, key: str) -> Entry | None:
        check_key(key)
        return await self._call(self._op, self._get, key)

    def _get(self, key: str) -> Entry | None:
        row = self._conn().execute(_GET_SQL, (key,)).fetchone()
        return None if row is None else _entry(row)

    async def range(self, prefix: str, *, limit: int | None = None) -> RangeResult:
        end = prefix_end(prefix)
        if limit is not None and limit < 1:
            raise StoreError("limit must be >= 1")
        return await self._call(self._op, self._range, prefix, end, limit)

    def _range(self, start: str, end: str | None, limit: int | None) -> RangeResult:
        db = self._conn()
        if end is None:
            rows = db.execute(_GET_SQL, (start,)).fetchall()
        else:
            rows = db.execute(_RANGE_SQL, (start, end, -1 if limit is None else limit)).fetchall()
        return RangeResult(tuple(_entry(r) for r in rows), self._revision)

    # -- writes ------------------------------------------------------------------

    async def put(
        self,
        key: str,
        value: bytes,
        *,
        expect_revision: int | None = None,
        lease: int | None = None,
    ) -> int:
        check_put(key, value, lease)
        if expect_revision is not None and expect_revision < 0:
            raise StoreError("expect_revision must be >= 0")

        def run(w: _Write) -> int:
            if expect_revision is not None:
                actual = _mod_revision(w.db, key)
                if actual != expect_revision:
                    raise Conflict(key, expect_revision, actual)
            self._put(w, key, value, lease)
            return w.revision

        return await self._grouped(run)

    def _put(self, w: _Write, key: str, value: bytes, lease: int | None) -> None:
        if (
            lease is not None
            and w.db.execute("SELECT 1 FROM leases WHERE id = ?", (lease,)).fetchone() is None
        ):
            raise LeaseNotFound(lease)
        revision = w.bump()
        w.db.execute(
            "INSERT INTO kv(key, value, create_revision, mod_revision, version, lease) "
            "VALUES (?, ?, ?, ?, 1, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value, "
            "mod_revision = excluded.mod_revision, version = kv.version + 1, "
            "lease = excluded.lease",
            (key, value, revision, revision, lease),
        )
        w.event(EventType.PUT, key, value)

    async def delete(self, key: str, *, expect_revision: int | None = None) -> int | None:
        check_key(key)
        if expect_revision is not None and expect_revision < 1:
            raise StoreError("expect_revision for a delete must be >= 1 (the key's revision)")

        def run(w: _Write) -> int | None:
            actual = _mod_revision(w.db, key)
            if expect_revision is not None and actual != expect_revision:
                raise Conflict(key, expect_revision, actual)
            if actual == 0:
                return None
            self._delete(w, key, None)
            return w.revision

        return await self._grouped(run)

    async def delete_prefix(self, prefix: str) -> int:
        end = prefix_end(prefix)
        return await self._grouped(lambda w: self._delete(w, prefix, end))

    def _delete(self, w: _Write, start: str, end: str | None) -> int:
        if end is None:
            keys = [start] if _mod_revision(w.db, start) else []
        else:
            keys = [
                row[0]
                for row in w.db.execute(
                    "SELECT key FROM kv WHERE key >= ? AND key < ? ORDER BY key", (start, end)
                )
            ]
        for key in keys:
            w.db.execute("DELETE FROM kv WHERE key = ?", (key,))
            w.event(EventType.DELETE, key, b"")
        return len(keys)

    async def txn(
        self,
        compares: Sequence[Compare],
        success: Sequence[TxnOp],
        failure: Sequence[TxnOp] = (),
    ) -> TxnResult:
        check_txn(compares, success, failure)

        def run(w: _Write) -> TxnResult:
            ok = all(_holds(w.db, c) for c in compares)
            responses: list[TxnResponse] = []
            for op in success if ok else failure:
                if isinstance(op, Put):
                    self._put(w, op.key, op.value, op.lease)
                    responses.append(w.revision)
                elif isinstance(op, Delete):
                    end = prefix_end(op.key) if op.prefix else None
                    responses.append(self._delete(w, op.key, end))
                else:
                    end = prefix_end(op.key) if op.prefix else None
                    found = self._range(op.key, end, None)
                    responses.append(RangeResult(found.entries, w.revision))
            return TxnResult(ok, w.revision, tuple(responses))

        return await self._grouped(run)

    # -- leases ------------------------------------------------------------------

    async def grant_lease(self, ttl: float) -> Lease:
        ttl = check_ttl(ttl)

        def run(w: _Write) -> Lease:
            db = w.db
            db.execute("UPDATE meta SET value = value + 1 WHERE name = 'lease_seq'")
            lease_id = int(
                db.execute("SELECT value FROM meta WHERE name = 'lease_seq'").fetchone()[0]
            )
            expires = self._clock() + float(ttl)
            db.execute(
                "INSERT INTO leases(id, ttl, expires_at) VALUES (?, ?, ?)",
                (lease_id, float(ttl), expires),
            )
            return Lease(lease_id, float(ttl), expires)

        return await self._grouped(run)

    async def keepalive(self, lease: int) -> Lease:
        def run(w: _Write) -> Lease:
            row = w.db.execute("SELECT ttl FROM leases WHERE id = ?", (lease,)).fetchone()
            if row is None:
                raise LeaseNotFound(lease)
            expires = self._clock() + float(row[0])
            w.db.execute("UPDATE leases SET expires_at = ? WHERE id = ?", (expires, lease))
            return Lease(lease, float(row[0]), expires)

        return await self._grouped(run)

    async def revoke(self, lease: int) -> int:
        def run(w: _Write) -> int:
            if w.db.execute("SELECT 1 FROM leases WHERE id = ?", (lease,)).fetchone() is None:
                raise LeaseNotFound(lease)
            return self._drop_lease(w, lease)

        return await self._grouped(run)

    async def get_lease(self, lease: int) -> Lease | None:
        def run() -> Lease | None:
            row = (
                self._conn()
                .execute("SELECT id, ttl, expires_at FROM leases WHERE id = ?", (lease,))
                .fetchone()
            )
            return None if row is None else Lease(int(row[0]), float(row[1]), float(row[2]))

        return await self._call(self._op, run)

    async def expire_leases(self) -> list[int]:
        return await self._call(self._expire_due)

    # -- history -----------------------------------------------------------------

    async def compact(self, revision: int) -> None:
        def run() -> None:
            if revision > self._revision:
                raise StoreError(f"cannot compact beyond the current revision {self._revision}")
            if revision <= self._compact_revision:
                return
            db = self._conn()
            db.execute("BEGIN IMMEDIATE")
            try:
                self._compact_locked(db, revision)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                self._load_meta(db)
                raise

        await self._call(self._op, run)

    def watch(
        self, prefix: str, *, start_revision: int | None = None
    ) -> AsyncGenerator[Event, None]:
        end = prefix_end(prefix)
        if start_revision is not None and start_revision < 1:
            raise StoreError("start_revision must be >= 1")
        # Fixed now, not at the first iteration: writes that complete in between are
        # part of the watch (they are read back from history).
        start = self._revision + 1 if start_revision is None else start_revision
        return self._watch(prefix, end, start)

    async def _watch(self, prefix: str, end: str, start: int) -> AsyncGenerator[Event, None]:
        # Registered before the first history read: every later commit reaches the
        # mailbox, and rows seen twice (history and mailbox) are skipped by seq.
        watcher = _Watcher(prefix, end, self._watch_buffer)
        self._watchers.add(watcher)
        try:
            position = start  # lowest revision whose events may not all be delivered yet
            after_seq = 0
            while True:
                watcher.queue.clear()
                watcher.overflowed = False
                # Catch up from history, in batches.
                while True:
                    rows, compacted = await self._call(
                        self._op, self._events, prefix, end, start, after_seq
                    )
                    if compacted > position:
                        raise Compacted(position, compacted)
                    for row in rows:
                        after_seq = row[0]
                        position = row[1]
                        yield _event(row)
                    if len(rows) < _WATCH_BATCH:
                        break
                # Then from the mailbox, until the consumer falls too far behind.
                while not watcher.overflowed:
                    while watcher.queue and not watcher.overflowed:
                        row = watcher.queue.popleft()
                        if row[0] > after_seq and row[1] >= start:
                            after_seq = row[0]
                            position = row[1]
                            yield _event(row)
                    if self._closed:
                        raise StoreClosed("the store was closed")
                    if watcher.overflowed:
                        break
                    watcher.wakeup.clear()
                    await watcher.wakeup.wait()
        finally:
            self._watchers.discard(watcher)

    def _events(self, prefix: str, end: str, start: int, after_seq: int) -> tuple[list[_Row], int]:
        rows = (
            self._conn()
            .execute(
                "SELECT seq, revision, type, key, value FROM events "
                "WHERE seq > ? AND revision >= ? AND key >= ? AND key < ? ORDER BY seq LIMIT ?",
                (after_seq, start, prefix, end, _WATCH_BATCH),
            )
            .fetchall()
        )
        return rows, self._compact_revision


def _settle(future: asyncio.Future[Any], outcome: tuple[bool, Any]) -> None:
    if future.done():  # its caller was cancelled; the write itself went through
        return
    ok, value = outcome
    if ok:
        future.set_result(value)
    else:
        future.set_exception(value)


def _event(row: _Row) -> Event:
    _, revision, kind, key, value = row
    return Event(EventType(kind), key, bytes(value), revision)


def _entry(row: tuple[Any, ...]) -> Entry:
    key, value, mod, create, version, lease = row
    return Entry(str(key), bytes(value), int(mod), int(create), int(version), lease)


def _mod_revision(db: sqlite3.Connection, key: str) -> int:
    row = db.execute("SELECT mod_revision FROM kv WHERE key = ?", (key,)).fetchone()
    return 0 if row is None else int(row[0])


def _holds(db: sqlite3.Connection, compare: Compare) -> bool:
    row = db.execute(
        "SELECT value, mod_revision, create_revision, version, lease FROM kv WHERE key = ?",
        (compare.key,),
    ).fetchone()
    if compare.target == "value":
        if row is None:
            return False
        actual: int | bytes = bytes(row[0])
    else:
        index = {"revision": 1, "create_revision": 2, "version": 3, "lease": 4}[compare.target]
        actual = 0 if row is None or row[index] is None else int(row[index])
    operand = compare.operand
    if compare.op == "==":
        return actual == operand
    if compare.op == "!=":
        return actual != operand
    if type(actual) is not type(operand):
        return False
    if compare.op == "<":
        return actual < operand  # type: ignore[operator]
    return actual > operand  # type: ignore[operator]


def _store_error(exc: sqlite3.Error, path: Path) -> StoreError:
    message = str(exc)
    if "locked" in message or "busy" in message:
        return StoreError(f"{path} is in use by another process")
    if isinstance(exc, sqlite3.DatabaseError) and "not a database" in message:
        return StoreError(f"{path} is not a Capstan store (not an SQLite database)")
    return StoreError(f"{path}: sqlite: {message}")
