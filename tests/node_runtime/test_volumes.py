"""VolumeStore: lifecycle, export/import round trip and the refusal corpus."""

from __future__ import annotations

import gzip
import io
import os
import stat
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from node.errors import AlreadyExists, InvalidArgument, NotFound, RuntimeFailure
from node.volumes import VolumeStore

Member = tuple[tarfile.TarInfo, bytes | None]
MAX = 1024 * 1024


def entry(name: str, kind: bytes = tarfile.REGTYPE, *, data: bytes = b"",
          link: str = "", mode: int = 0o644) -> Member:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.linkname = link
    if kind in (tarfile.REGTYPE, tarfile.AREGTYPE):
        info.size = len(data)
        return info, data
    return info, None


def make_tar(*members: Member) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def chunked(data: bytes, size: int = 1000) -> list[bytes]:
    return [data[i:i + size] for i in range(0, len(data), size)]


def snapshot(root: Path) -> dict[str, tuple[str, bytes, int]]:
    """Every entry under ``root`` (symlinks not followed): kind, content/target, mode."""
    out: dict[str, tuple[str, bytes, int]] = {}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            rel = str(path.relative_to(root))
            st = os.lstat(path)
            mode = stat.S_IMODE(st.st_mode)
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", os.readlink(path).encode(), 0)
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir", b"", mode)
            elif stat.S_ISREG(st.st_mode):
                out[rel] = ("file", path.read_bytes(), mode)
            else:
                out[rel] = ("special", b"", mode)
    return out


@pytest.fixture
def store(tmp_path: Path) -> VolumeStore:
    return VolumeStore.for_state_dir(tmp_path / "state")


@pytest.fixture
def populated(store: VolumeStore) -> Path:
    """A volume ``data`` with some content the refusals must leave alone."""
    root = store.create("data")
    (root / "keep.txt").write_bytes(b"old content\n")
    (root / "sub").mkdir()
    (root / "sub" / "nested.bin").write_bytes(bytes(range(256)))
    return root


# -- lifecycle ------------------------------------------------------------------------


def test_lifecycle(store: VolumeStore, tmp_path: Path) -> None:
    assert store.root == (tmp_path / "state" / "volumes").resolve()
    assert store.list() == []
    path = store.create("data")
    assert path == store.root / "data" and path.is_dir()
    assert store.exists("data") and store.path("data") == path
    with pytest.raises(AlreadyExists):
        store.create("data")
    assert store.ensure("data") == path
    assert store.ensure("other").is_dir()
    assert store.list() == ["data", "other"]
    store.remove("data")
    assert not store.exists("data")
    assert store.list() == ["other"]
    assert sorted(os.listdir(store.root)) == ["other"]  # no trash left behind
    with pytest.raises(NotFound):
        store.path("data")
    with pytest.raises(NotFound):
        store.remove("data")


@pytest.mark.parametrize("name", ["", "..", ".hidden", "a/b", "UPPER", "x" * 64, "a\x00b"])
def test_bad_volume_names_refused(store: VolumeStore, name: str) -> None:
    for call in (store.create, store.path, store.exists, store.remove, store.export):
        with pytest.raises(InvalidArgument) as err:
            call(name)
        assert err.value.field == "volume"
    with pytest.raises(InvalidArgument):
        store.import_(name, [make_tar(entry("a", data=b"x"))], max_bytes=MAX)
    assert os.listdir(store.root) == []


def test_planted_symlink_in_store_is_never_followed(store: VolumeStore, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_bytes(b"host secret")
    os.symlink(outside, store.root / "evil")
    assert not store.exists("evil")
    assert store.list() == []
    with pytest.raises(RuntimeFailure):
        store.path("evil")
    with pytest.raises(RuntimeFailure):
        store.export("evil")
    with pytest.raises(RuntimeFailure):
        store.remove("evil")
    with pytest.raises(RuntimeFailure):
        store.import_("evil", [make_tar(entry("new", data=b"x"))], max_bytes=MAX)
    assert sorted(os.listdir(outside)) == ["secret"]
    assert (outside / "secret").read_bytes() == b"host secret"
    assert sorted(os.listdir(store.root)) == ["evil"]  # staging cleaned up


# -- export / import ------------------------------------------------------------------


def test_round_trip(store: VolumeStore) -> None:
    src = store.create("src")
    (src / "dir" / "deeper").mkdir(parents=True)
    (src / "dir" / "deeper" / "file.txt").write_bytes(b"hello\n" * 1000)
    (src / "empty").write_bytes(b"")
    (src / "run.sh").write_bytes(b"#!/bin/sh\necho hi\n")
    os.chmod(src / "run.sh", 0o700)
    (src / "big.bin").write_bytes(os.urandom(300_000))
    (src / ("long-" + "n" * 150)).write_bytes(b"long name")  # needs a pax record
    os.symlink("dir/deeper/file.txt", src / "link")
    os.symlink("../file.txt", src / "dir" / "deeper" / "up")  # dangling but inside
    os.link(src / "empty", src / "hard")
    os.mkfifo(src / "fifo")  # not portable: skipped by export

    stream = store.export("src")
    result = store.import_("dst", stream, max_bytes=MAX)

    expected = snapshot(src)
    del expected["fifo"]
    assert snapshot(store.path("dst")) == expected
    assert result.files == 8  # 5 regular files + 2 symlinks + 1 hardlink
    assert result.bytes == 6000 + 18 + 300_000 + 9
    dst = store.path("dst")
    assert os.stat(dst / "hard").st_ino == os.stat(dst / "empty").st_ino


def test_export_does_not_follow_symlinks_out(store: VolumeStore, tmp_path: Path) -> None:
    src = store.create("src")
    os.symlink("/etc", src / "etc")
    os.symlink(str(tmp_path), src / "up")
    with tarfile.open(fileobj=io.BytesIO(b"".join(store.export("src")))) as tar:
        members = {m.name: (m.type, m.linkname) for m in tar.getmembers()}
    assert members == {"etc": (tarfile.SYMTYPE, "/etc"), "up": (tarfile.SYMTYPE, str(tmp_path))}


def test_export_unknown_volume(store: VolumeStore) -> None:
    with pytest.raises(NotFound):
        store.export("missing")


def test_import_replaces_content(populated: Path, store: VolumeStore) -> None:
    result = store.import_("data", chunked(make_tar(
        entry("new", tarfile.DIRTYPE, mode=0o750),
        entry("new/file", data=b"fresh"),
    )), max_bytes=MAX)
    assert (result.bytes, result.files) == (5, 1)
    assert snapshot(populated) == {
        "new": ("dir", b"", 0o750), "new/file": ("file", b"fresh", 0o644)}
    assert sorted(os.listdir(store.root)) == ["data"]  # old content and staging gone


def test_import_strips_special_mode_bits(store: VolumeStore) -> None:
    store.import_("data", [make_tar(entry("suid", data=b"x", mode=0o4755))], max_bytes=MAX)
    assert stat.S_IMODE(os.lstat(store.path("data") / "suid").st_mode) == 0o755


def test_import_directory_entry_after_its_contents(store: VolumeStore) -> None:
    store.import_("data", [make_tar(
        entry("d/f", data=b"x"), entry("d", tarfile.DIRTYPE, mode=0o700),
    )], max_bytes=MAX)
    assert snapshot(store.path("data")) == {"d": ("dir", b"", 0o700), "d/f": ("file", b"x", 0o644)}


def test_import_of_exact_limit_accepted(store: VolumeStore) -> None:
    result = store.import_("data", [make_tar(entry("a", data=b"x" * 100))], max_bytes=100)
    assert result.bytes == 100


# -- refusal corpus -------------------------------------------------------------------

GOOD = entry("good.txt", data=b"written before the bad member")

CORPUS: dict[str, tuple[list[Member], str]] = {
    "absolute path": ([GOOD, entry("/etc/evil", data=b"x")], "/etc/evil"),
    "dot-dot": ([GOOD, entry("../x", data=b"x")], "../x"),
    "nested dot-dot": ([GOOD, entry("a/../../x", data=b"x")], "a/../../x"),
    "symlink to /etc": ([GOOD, entry("etc", tarfile.SYMTYPE, link="/etc")], "etc"),
    "symlink up and out": ([GOOD, entry("d/up", tarfile.SYMTYPE, link="../..")], "d/up"),
    "symlink chain out": (
        [GOOD, entry("here", tarfile.SYMTYPE, link="."),
         entry("out", tarfile.SYMTYPE, link="here/..")], "out"),
    "symlink chain completed later": (
        [GOOD, entry("out", tarfile.SYMTYPE, link="here/.."),
         entry("here", tarfile.SYMTYPE, link=".")], "out"),
    "write through a symlink": (
        [GOOD, entry("sub", tarfile.DIRTYPE), entry("lnk", tarfile.SYMTYPE, link="sub"),
         entry("lnk/f", data=b"x")], "lnk/f"),
    "hardlink escaping": ([GOOD, entry("h", tarfile.LNKTYPE, link="../outside")], "h"),
    "hardlink to host file": ([GOOD, entry("h", tarfile.LNKTYPE, link="/etc/passwd")], "h"),
    "hardlink to unknown": ([GOOD, entry("h", tarfile.LNKTYPE, link="not-in-archive")], "h"),
    "char device": ([GOOD, entry("null", tarfile.CHRTYPE)], "null"),
    "block device": ([GOOD, entry("sda", tarfile.BLKTYPE)], "sda"),
    "fifo": ([GOOD, entry("pipe", tarfile.FIFOTYPE)], "pipe"),
    "oversize": ([GOOD, entry("huge", data=b"x" * 2048)], "huge"),
    "duplicate": ([GOOD, entry("good.txt", data=b"again")], "good.txt"),
    "file under a file": ([GOOD, entry("good.txt/x", data=b"x")], "good.txt/x"),
}


@pytest.mark.parametrize("case", sorted(CORPUS))
def test_refusal_corpus_leaves_volume_unchanged(
    case: str, populated: Path, store: VolumeStore
) -> None:
    members, offender = CORPUS[case]
    before = snapshot(populated)
    with pytest.raises(InvalidArgument) as err:
        store.import_("data", chunked(make_tar(*members)), max_bytes=2000)
    assert err.value.field == f"member {offender!r}"
    assert offender in str(err.value)
    assert snapshot(populated) == before
    assert sorted(os.listdir(store.root)) == ["data"]  # no staging left


@pytest.mark.parametrize("case", ["absolute path", "symlink to /etc", "char device"])
def test_refusal_creates_no_new_volume(case: str, store: VolumeStore) -> None:
    members, _ = CORPUS[case]
    with pytest.raises(InvalidArgument):
        store.import_("fresh", [make_tar(*members)], max_bytes=MAX)
    assert not store.exists("fresh")
    assert os.listdir(store.root) == []


BadStream = Callable[[], list[bytes]]

STREAMS: dict[str, BadStream] = {
    "not a tar": lambda: [b"hello, this is not a tar archive" * 40],
    "gzip": lambda: [gzip.compress(make_tar(entry("a", data=b"x")))],
    "truncated": lambda: [make_tar(entry("a", data=b"x" * 5000))[:1500]],
    "not bytes": lambda: ["text, not bytes"],  # type: ignore[list-item]
}


@pytest.mark.parametrize("case", sorted(STREAMS))
def test_bad_streams_refused(case: str, populated: Path, store: VolumeStore) -> None:
    before = snapshot(populated)
    with pytest.raises(InvalidArgument) as err:
        store.import_("data", STREAMS[case](), max_bytes=MAX)
    assert err.value.field == "data"
    assert snapshot(populated) == before
    assert sorted(os.listdir(store.root)) == ["data"]


def test_too_many_entries_refused(populated: Path, store: VolumeStore) -> None:
    before = snapshot(populated)
    archive = make_tar(*(entry(f"f{i}", data=b"") for i in range(6)))
    with pytest.raises(InvalidArgument) as err:
        store.import_("data", [archive], max_bytes=MAX, max_files=5)
    assert err.value.field == "member 'f5'"
    assert snapshot(populated) == before


def test_raw_stream_size_capped(populated: Path, store: VolumeStore) -> None:
    # A 64 MiB pax header, which tarfile would read whole into memory: the stream cap
    # must stop it long before, without any member ever being produced.
    header = tarfile.TarInfo("././@PaxHeader")
    header.type = tarfile.XHDTYPE
    header.size = 64 * 1024 * 1024
    consumed = 0

    def stream() -> Iterator[bytes]:
        nonlocal consumed
        yield header.tobuf(tarfile.USTAR_FORMAT)
        for _ in range(64):
            consumed += 1
            yield b"9" * (1024 * 1024)

    before = snapshot(populated)
    with pytest.raises(InvalidArgument) as err:
        store.import_("data", stream(), max_bytes=1024, max_files=10)
    assert err.value.field == "data"
    assert consumed < 10  # refused after a few MiB, not after reading it all
    assert snapshot(populated) == before
    assert sorted(os.listdir(store.root)) == ["data"]
