"""What only the SQLite store promises: file handling, exclusivity, bounded history."""

from __future__ import annotations

import asyncio
import sqlite3
import stat
from pathlib import Path

import pytest

from orchestrator.store import Compacted, Put, StoreError
from orchestrator.store.sqlite import SqliteStore

from ._harness import FakeClock


async def test_file_is_private_wal_and_full_sync(tmp_path: Path, clock: FakeClock) -> None:
    path = tmp_path / "s.db"
    async with SqliteStore(path, clock=clock) as store:
        await store.put("/a", b"1")
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    db = sqlite3.connect(path)
    try:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        db.close()


async def test_second_opener_is_refused_while_first_runs(tmp_path: Path, clock: FakeClock) -> None:
    path = tmp_path / "s.db"
    async with SqliteStore(path, clock=clock) as first:
        await first.put("/a", b"1")
        second = SqliteStore(path, clock=clock)
        with pytest.raises(StoreError, match="in use by another process"):
            await second.open()
        assert await first.put("/a", b"2") == 2  # the first one is unaffected
    async with SqliteStore(path, clock=clock) as again:  # and the file is free once closed
        assert (await again.get("/a")).value == b"2"  # type: ignore[union-attr]


async def test_foreign_file_is_refused_and_left_alone(tmp_path: Path, clock: FakeClock) -> None:
    path = tmp_path / "s.db"
    content = b"this is not a database, it is somebody's notes\n" * 100
    path.write_bytes(content)
    with pytest.raises(StoreError, match="not a Capstan store"):
        await SqliteStore(path, clock=clock).open()
    assert path.read_bytes() == content


async def test_missing_directory_is_refused(tmp_path: Path, clock: FakeClock) -> None:
    with pytest.raises(StoreError, match="does not exist"):
        await SqliteStore(tmp_path / "nope" / "s.db", clock=clock).open()
    assert not (tmp_path / "nope").exists()


async def test_history_is_bounded(tmp_path: Path, clock: FakeClock) -> None:
    async with SqliteStore(tmp_path / "s.db", clock=clock, history=10) as store:
        for i in range(30):
            await store.put("/k", str(i).encode())
        with pytest.raises(Compacted) as exc:
            await anext(store.watch("/k", start_revision=5))
        assert exc.value.compact_revision == 21
        recent = store.watch("/k", start_revision=21)
        assert [int((await anext(recent)).value) for _ in range(10)] == list(range(20, 30))
        await recent.aclose()


async def test_caught_up_watcher_survives_history_trimming(
    tmp_path: Path, clock: FakeClock
) -> None:
    """A watcher that has seen everything is not 'compacted' by writes elsewhere."""
    async with SqliteStore(tmp_path / "s.db", clock=clock, history=10) as store:
        events = store.watch("/quiet/", start_revision=1)
        await store.put("/quiet/a", b"1")
        assert (await anext(events)).key == "/quiet/a"
        for i in range(50):
            await store.put("/busy", str(i).encode())
        pending = asyncio.ensure_future(anext(events))
        await asyncio.sleep(0)
        await store.put("/quiet/b", b"2")
        assert (await pending).key == "/quiet/b"
        await events.aclose()


async def test_slow_watcher_within_its_buffer_loses_nothing(
    tmp_path: Path, clock: FakeClock
) -> None:
    async with SqliteStore(tmp_path / "s.db", clock=clock, history=10) as store:
        await store.put("/w/0", b"")
        events = store.watch("/w/", start_revision=1)
        assert (await anext(events)).key == "/w/0"
        for i in range(1, 40):  # history keeps 10 of these, the watcher's mailbox all
            await store.put(f"/w/{i}", b"")
        assert [(await anext(events)).key for _ in range(39)] == [f"/w/{i}" for i in range(1, 40)]
        await events.aclose()


async def test_watcher_beyond_its_buffer_is_told_it_lost_history(
    tmp_path: Path, clock: FakeClock
) -> None:
    async with SqliteStore(tmp_path / "s.db", clock=clock, history=10, watch_buffer=5) as store:
        await store.put("/w/0", b"")
        events = store.watch("/w/", start_revision=1)
        assert (await anext(events)).key == "/w/0"
        for i in range(1, 40):
            await store.put(f"/w/{i}", b"")
        # It never read those and they are gone: it must not silently skip ahead.
        with pytest.raises(Compacted) as exc:
            await anext(events)
        assert exc.value.requested == 1


async def test_large_transaction_is_delivered_whole(tmp_path: Path, clock: FakeClock) -> None:
    """More events at one revision than one watch batch: none lost or repeated."""
    async with SqliteStore(tmp_path / "s.db", clock=clock) as store:
        await store.txn([], [Put(f"/big/{i:04d}", b"v") for i in range(700)])
        await store.put("/big/zz-after", b"v")
        events = store.watch("/big/", start_revision=1)
        keys = [(await anext(events)).key for _ in range(701)]
        await events.aclose()
        assert keys == [f"/big/{i:04d}" for i in range(700)] + ["/big/zz-after"]


async def test_reopen_after_close_needs_a_new_handle(tmp_path: Path, clock: FakeClock) -> None:
    store = SqliteStore(tmp_path / "s.db", clock=clock)
    await store.open()
    with pytest.raises(StoreError, match="already open"):
        await store.open()
    await store.close()
    with pytest.raises(StoreError, match="cannot be reopened"):
        await store.open()


async def test_concurrent_writes_commit_together_and_each_fails_alone(
    tmp_path: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Group commit: writes queued during a commit share the next one, each keeps its
    own revision and its own outcome (a refused compare-and-swap fails that write only)."""
    async with SqliteStore(tmp_path / "s.db", clock=clock) as store:
        taken = await store.put("/k/taken", b"x")
        groups: list[int] = []
        group = store._write_group

        def counting(runs: list[object]) -> object:
            groups.append(len(runs))
            return group(runs)  # type: ignore[arg-type]

        monkeypatch.setattr(store, "_write_group", counting)
        watch = store.watch("/k/", start_revision=taken + 1)
        results = await asyncio.gather(
            *(store.put(f"/k/{i:03d}", b"v") for i in range(100)),
            store.put("/k/taken", b"y", expect_revision=0),  # must not exist: refused
            *(store.put(f"/k/{i:03d}", b"w") for i in range(100, 150)),
            return_exceptions=True,
        )
        refused = [r for r in results if isinstance(r, BaseException)]
        assert len(refused) == 1 and type(refused[0]).__name__ == "Conflict"
        revisions = sorted(r for r in results if isinstance(r, int))
        assert revisions == list(range(taken + 1, taken + 151))  # one each, no gap
        assert sum(groups) == 151 and len(groups) < 151 / 4
        assert (await store.get("/k/taken")).value == b"x"  # type: ignore[union-attr]
        seen = [await anext(watch) for _ in range(150)]
        assert [e.revision for e in seen] == revisions
        await watch.aclose()
    async with SqliteStore(tmp_path / "s.db", clock=clock) as again:
        assert len(await again.range("/k/")) == 151  # all of it was committed
