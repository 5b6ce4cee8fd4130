"""ReloadingFile: what a change costs to be seen, and that it always is seen in time.

With a check interval, a file changed by another process is seen within the interval
of the injected clock, and one this process writes with ``atomic_write`` at the next
``get`` (a node's own trust updates: a revocation counts from the next call). A bad
new version never replaces the last good one.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from pki.files import atomic_write
from pki.reloading import ReloadingFile
from tests.waiting import FakeClock


def _lines(raw: bytes) -> frozenset[str]:
    text = raw.decode()
    if "bad" in text:
        raise ValueError("bad line")
    return frozenset(text.split())


@pytest.fixture
def path(tmp_path: Path) -> Path:
    p = tmp_path / "deny.txt"
    p.write_text("A\n")
    return p


def _other_process_writes(path: Path, text: str) -> None:
    # Not through atomic_write: as another process (or an operator's editor) would.
    tmp = path.with_suffix(".new")
    tmp.write_text(text)
    os.replace(tmp, path)


def test_without_interval_every_get_sees_a_change(path: Path) -> None:
    f = ReloadingFile(path, _lines, "deny list")
    _other_process_writes(path, "A\nB\n")
    assert f.get() == {"A", "B"}


def test_a_change_by_another_process_is_seen_within_the_interval(path: Path) -> None:
    clock = FakeClock()
    f = ReloadingFile(path, _lines, "deny list", interval=0.05, clock=clock)
    assert f.get() == {"A"}
    _other_process_writes(path, "A\nB\n")
    assert f.get() == {"A"}  # not looked at yet: that stat is what the interval saves
    clock.advance(0.05)
    assert f.get() == {"A", "B"}


def test_a_stat_at_most_once_per_interval(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeClock()
    f = ReloadingFile(path, _lines, "deny list", interval=0.05, clock=clock)
    stats: list[object] = []
    real_stat = os.stat
    monkeypatch.setattr(os, "stat", lambda p, *a, **k: stats.append(p) or real_stat(p, *a, **k))
    for _ in range(100):
        f.get()
    assert len(stats) == 1
    clock.advance(0.049)
    f.get()
    assert len(stats) == 1
    clock.advance(0.001)
    f.get()
    assert len(stats) == 2


def test_a_write_by_this_process_is_seen_at_the_next_get(path: Path) -> None:
    clock = FakeClock()
    f = ReloadingFile(path, _lines, "deny list", interval=3600, clock=clock)
    assert f.get() == {"A"}
    atomic_write(path, b"A\nB\n")
    assert f.get() == {"A", "B"}  # the clock has not moved
    # Also when the path is spelled differently (relative, as a config may give it).
    cwd = os.getcwd()
    os.chdir(path.parent)
    try:
        atomic_write(Path(path.name), b"C\n")
    finally:
        os.chdir(cwd)
    assert f.get() == {"C"}


def test_a_get_during_a_write_of_ours_looks_again_after_it(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = FakeClock()
    f = ReloadingFile(path, _lines, "deny list", interval=3600, clock=clock)
    assert f.get() == {"A"}
    entered, release = threading.Event(), threading.Event()
    real_replace = os.replace

    def slow_replace(src: str, dst: str) -> None:
        entered.set()
        release.wait(10)
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", slow_replace)
    writer = threading.Thread(target=atomic_write, args=(path, b"B\n"))
    writer.start()
    try:
        assert entered.wait(10)
        assert f.get() == {"A"}  # the write has begun but nothing new is visible yet
    finally:
        release.set()
        writer.join(10)
    assert f.get() == {"B"}


def test_a_clock_stepping_back_looks_again(path: Path) -> None:
    clock = FakeClock()
    f = ReloadingFile(path, _lines, "deny list", interval=0.05, clock=clock)
    f.get()
    _other_process_writes(path, "B\n")
    clock.advance(-10)
    assert f.get() == {"B"}


def test_a_bad_new_version_keeps_the_last_good_one(path: Path) -> None:
    clock = FakeClock()
    f = ReloadingFile(path, _lines, "deny list", interval=0.05, clock=clock)
    atomic_write(path, b"bad\n")
    assert f.get() == {"A"}
    clock.advance(1)
    assert f.get() == {"A"}
    atomic_write(path, b"C\n")
    assert f.get() == {"C"}


def test_a_negative_interval_is_refused(path: Path) -> None:
    with pytest.raises(ValueError, match="interval"):
        ReloadingFile(path, _lines, "deny list", interval=-1)


def test_only_watched_paths_are_counted(tmp_path: Path) -> None:
    from pki import files

    before = len(files._writes)
    for i in range(50):
        atomic_write(tmp_path / f"not-watched-{i}", b"x")
    assert len(files._writes) == before
