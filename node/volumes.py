"""The node's volume store: one directory per volume under ``<state_dir>/volumes``.

Volumes are bind-mounted into workloads, so their content is written by code the node
does not trust. Every host-side walk of a volume therefore goes through directory file
descriptors and never follows a symlink, and an imported tar stream is checked member by
member: one bad member refuses the whole archive and leaves the volume as it was.
"""

from __future__ import annotations

import builtins
import contextlib
import hashlib
import os
import posixpath
import secrets
import shutil
import stat
import tarfile
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from node.errors import AlreadyExists, InvalidArgument, NotFound, RuntimeFailure
from node.validation import validate_name

VOLUMES_DIRNAME = "volumes"
DEFAULT_MAX_FILES = 100_000
_CHUNK = 64 * 1024
_BLOCK = tarfile.BLOCKSIZE
# Room for headers, padding and long-name records on top of the content limit; it
# bounds what tarfile may buffer in memory for a single (pax) header.
_HEADER_ALLOWANCE_PER_FILE = 1024
_HEADER_ALLOWANCE = 4 * 1024 * 1024
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_DIRECTORY = getattr(os, "O_DIRECTORY", 0)


@dataclass(frozen=True)
class ImportResult:
    bytes: int  # content bytes of the regular files written
    files: int  # regular files, symlinks and hardlinks written (directories not counted)


_LOCKS_GUARD = threading.Lock()
_SWAP_LOCKS: dict[str, threading.Lock] = {}


class VolumeStore:
    """Volumes of one node, each a directory ``<root>/<name>``."""

    def __init__(self, root: Path) -> None:
        try:
            Path(root).mkdir(mode=0o700, parents=True, exist_ok=True)
            # Resolved once: later checks compare against this real path.
            self.root = Path(os.path.realpath(root))
        except OSError as exc:
            raise RuntimeFailure(f"volume store {root}: {exc.strerror}") from None
        # Serializes the rename dances of import and remove (the gRPC server is threaded).
        # One lock per directory, shared by every store object on it (the service, the
        # runtime and the task runner each hold one).
        with _LOCKS_GUARD:
            self._swap_lock = _SWAP_LOCKS.setdefault(str(self.root), threading.Lock())

    @classmethod
    def for_state_dir(cls, state_dir: Path) -> VolumeStore:
        return cls(Path(state_dir) / VOLUMES_DIRNAME)

    # -- lookups -------------------------------------------------------------------

    def _entry(self, name: str) -> Path:
        return self.root / validate_name("volume", name)

    def exists(self, name: str) -> bool:
        try:
            st = os.lstat(self._entry(name))
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise RuntimeFailure(f"volume {name!r}: {exc.strerror}") from None
        return stat.S_ISDIR(st.st_mode)

    def path(self, name: str) -> Path:
        """The host directory of an existing volume; never a symlink, always inside root."""
        entry = self._entry(name)
        try:
            st = os.lstat(entry)
        except FileNotFoundError:
            raise NotFound(f"volume {name!r} does not exist") from None
        except OSError as exc:
            raise RuntimeFailure(f"volume {name!r}: {exc.strerror}") from None
        if not stat.S_ISDIR(st.st_mode):
            # Someone planted a symlink or file in the store: never hand it out.
            raise RuntimeFailure(f"volume {name!r} is not a plain directory; refusing it")
        if os.path.realpath(entry) != str(entry):
            raise RuntimeFailure(f"volume {name!r} resolves outside the volume store")
        return entry

    def list(self) -> builtins.list[str]:
        names: builtins.list[str] = []
        try:
            with os.scandir(self.root) as it:
                for entry in it:
                    if entry.name.startswith("."):
                        continue  # our own temp/trash directories
                    if entry.is_dir(follow_symlinks=False):
                        names.append(entry.name)
        except OSError as exc:
            raise RuntimeFailure(f"volume store {self.root}: {exc.strerror}") from None
        return sorted(names)

    # -- lifecycle -----------------------------------------------------------------

    def create(self, name: str) -> Path:
        entry = self._entry(name)
        try:
            os.mkdir(entry, 0o755)
        except FileExistsError:
            raise AlreadyExists(f"volume {name!r} already exists") from None
        except OSError as exc:
            raise RuntimeFailure(f"volume {name!r}: {exc.strerror}") from None
        return entry

    def ensure(self, name: str) -> Path:
        """The volume's directory, created empty if it does not exist yet."""
        with contextlib.suppress(AlreadyExists):
            self.create(name)
        return self.path(name)

    def own(self, name: str, uid: int, gid: int) -> None:
        """Make the volume writable by the instance that mounts it (``uid:gid``).

        Only when its top directory belongs to someone else (a fresh, imported or
        migrated volume) is the whole tree handed over; symlinks are changed, never
        followed.
        """
        entry = self.path(name)
        try:
            st = os.lstat(entry)
            if (st.st_uid, st.st_gid) == (uid, gid):
                return
            for top, dirs, files in os.walk(entry):
                for item in (*dirs, *files):
                    os.lchown(os.path.join(top, item), uid, gid)
            os.lchown(entry, uid, gid)
        except OSError as exc:
            raise RuntimeFailure(f"volume {name!r}: {exc.strerror}") from None

    def remove(self, name: str) -> None:
        entry = self.path(name)
        trash = self._sibling(".trash", name)
        try:
            # Renamed first so the name is free at once and a crash leaves only trash.
            with self._swap_lock:
                os.rename(entry, trash)
        except OSError as exc:
            raise RuntimeFailure(f"volume {name!r} cannot be removed: {exc.strerror}") from None
        shutil.rmtree(trash, ignore_errors=True)  # fd-based on Linux: safe against swaps

    def _sibling(self, kind: str, name: str) -> Path:
        return self.root / f"{kind}-{name}-{secrets.token_hex(6)}"

    # -- export --------------------------------------------------------------------

    def export(self, name: str) -> Iterator[bytes]:
        """A plain tar stream of the volume's contents, member names relative to it.

        Only directories, regular files, symlinks (as links, never followed) and
        hardlinks between exported files; sockets, fifos and devices are skipped.
        """
        top = self.path(name)
        return _export_tree(top, name)

    # -- import --------------------------------------------------------------------

    def import_(
        self,
        name: str,
        chunks: Iterable[bytes],
        *,
        max_bytes: int,
        max_files: int = DEFAULT_MAX_FILES,
    ) -> ImportResult:
        """Replace the volume's content with a tar stream, or refuse it whole.

        The volume is created if it does not exist. The archive is extracted into a
        temporary directory beside the volume and swapped in only once every member
        passed; on any refusal the volume is left exactly as it was.
        """
        validate_name("volume", name)
        if max_bytes < 0 or max_files < 0:
            raise InvalidArgument("max_bytes", "limits must not be negative")
        staging = self._sibling(".import", name)
        try:
            os.mkdir(staging, 0o755)
        except OSError as exc:
            raise RuntimeFailure(f"volume {name!r}: {exc.strerror}") from None
        try:
            reader = _ChunkReader(
                chunks, limit=max_bytes + _HEADER_ALLOWANCE + _HEADER_ALLOWANCE_PER_FILE * max_files
            )
            result = _Extractor(staging, max_bytes=max_bytes, max_files=max_files).run(reader)
            # Read the stream to its end before the swap: whatever checks the stream
            # makes at its end (the source's digest) must pass first.
            reader.drain()
            with self._swap_lock:
                self._swap_in(name, staging)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return result

    def _swap_in(self, name: str, staging: Path) -> None:
        entry = self._entry(name)
        old: Path | None = None
        try:
            if self.exists(name):
                self.path(name)  # refuses a planted symlink before we touch it
                old = self._sibling(".old", name)
                os.rename(entry, old)
            try:
                os.rename(staging, entry)
            except OSError:
                if old is not None:
                    os.rename(old, entry)  # put the previous content back
                raise
        except OSError as exc:
            raise RuntimeFailure(f"volume {name!r} cannot be replaced: {exc.strerror}") from None
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def digest_checked(messages: Iterable[Any], *, required: bool) -> Iterator[bytes]:
    """The data of a volume stream whose last message may carry ``digest``, the source's
    ``sha256:<hex>`` of all the data; raises InvalidArgument at the end when it does not
    match (or, with ``required``, is missing), so an import refuses the whole stream."""
    h = hashlib.sha256()
    claimed = ""
    for msg in messages:
        if claimed:
            raise InvalidArgument("digest", "data after the stream's digest")
        data = bytes(msg.data)
        h.update(data)
        if data:
            yield data
        claimed = str(msg.digest)
    if not claimed:
        if required:
            raise InvalidArgument("digest", "the source sent no digest of the volume")
        return
    if claimed != "sha256:" + h.hexdigest():
        raise InvalidArgument("digest", "the volume's data does not match its source's digest")


# -- tar stream reading -----------------------------------------------------------------


class _ChunkReader:
    """A read-only file over an iterator of byte chunks, refusing more than ``limit`` bytes."""

    def __init__(self, chunks: Iterable[bytes], *, limit: int) -> None:
        self._it = iter(chunks)
        self._buf = b""
        self._limit = limit
        self.consumed = 0

    def drain(self) -> None:
        """Consume what is left after the archive's end (within the same limit)."""
        self._buf = b""
        while self.read(_CHUNK):
            self._buf = b""

    def read(self, size: int = -1) -> bytes:
        while size < 0 or len(self._buf) < size:
            try:
                chunk = next(self._it)
            except StopIteration:
                break
            if not isinstance(chunk, bytes | bytearray | memoryview):
                raise InvalidArgument("data", "archive chunks must be bytes")
            self.consumed += len(chunk)
            if self.consumed > self._limit:
                raise InvalidArgument("data", f"archive stream larger than {self._limit} bytes")
            self._buf += bytes(chunk)
        if size < 0:
            out, self._buf = self._buf, b""
        else:
            out, self._buf = self._buf[:size], self._buf[size:]
        return out


_ALLOWED_TYPES = {
    tarfile.REGTYPE,
    tarfile.AREGTYPE,
    tarfile.DIRTYPE,
    tarfile.SYMTYPE,
    tarfile.LNKTYPE,
}


def _member_path(raw: str) -> str:
    """The normalized relative path of a member, or raise InvalidArgument naming it."""
    field = f"member {raw[:200]!r}"
    if "\x00" in raw:
        raise InvalidArgument(field, "name contains NUL")
    if raw.startswith("/"):
        raise InvalidArgument(field, "absolute path")
    parts = [p for p in raw.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise InvalidArgument(field, "path contains '..'")
    return "/".join(parts)


class _Extractor:
    """Writes checked members into ``root`` (a fresh, private staging directory)."""

    def __init__(self, root: Path, *, max_bytes: int, max_files: int) -> None:
        self.root = root
        self.max_bytes = max_bytes
        self.max_files = max_files
        self.total = 0
        self.count = 0
        self.entries = 0
        self.seen: set[str] = set()
        self.implicit: set[str] = set()  # parent directories made before their own entry
        self.regular: set[str] = set()
        self.symlinks: set[str] = set()
        self.dir_modes: dict[str, int] = {}

    def run(self, reader: _ChunkReader) -> ImportResult:
        try:
            with tarfile.open(fileobj=reader, mode="r|") as archive:  # type: ignore[call-overload]
                for member in archive:
                    self._extract(archive, member)
        except InvalidArgument:
            raise
        except (tarfile.TarError, EOFError) as exc:
            raise InvalidArgument("data", f"not a valid tar stream: {exc}") from None
        except OSError as exc:
            raise RuntimeFailure(f"volume import failed: {exc.strerror or exc}") from None
        self._check_symlinks()
        # Modes last: a read-only directory must not block writing its own members.
        for rel, mode in sorted(self.dir_modes.items(), key=lambda kv: -kv[0].count("/")):
            os.chmod(self.root / rel, mode)
        return ImportResult(bytes=self.total, files=self.count)

    def _extract(self, archive: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        field = f"member {member.name[:200]!r}"
        rel = _member_path(member.name)
        if member.type not in _ALLOWED_TYPES:
            kind = {
                tarfile.CHRTYPE: "character device",
                tarfile.BLKTYPE: "block device",
                tarfile.FIFOTYPE: "fifo",
                tarfile.CONTTYPE: "contiguous file",
            }.get(member.type, f"type {member.type!r}")
            raise InvalidArgument(field, f"{kind} not allowed")
        if rel == "":
            if member.isdir():
                return  # the archive's own "./" entry: the volume root itself
            raise InvalidArgument(field, "empty path")
        if rel in self.implicit and member.isdir():
            # The directory's own entry after its contents: only its mode is news.
            self.implicit.discard(rel)
            self.dir_modes[rel] = (member.mode & 0o777) | 0o700
            return
        if rel in self.seen:
            raise InvalidArgument(field, "appears twice in the archive")
        self._check_parents(field, rel)
        # The explicit checks first, so the refusal says what is wrong in our words.
        hardlink_source = ""
        if member.isfile():
            if self.total + member.size > self.max_bytes:
                raise InvalidArgument(field, f"archive content exceeds {self.max_bytes} bytes")
        elif member.issym():
            self._check_symlink_target(field, rel, member.linkname)
        elif member.islnk():
            hardlink_source = self._hardlink_source(field, member.linkname)
        # Python's own tar safety filter as a second opinion.
        try:
            tarfile.data_filter(member, str(self.root))
        except tarfile.FilterError as exc:
            text = str(exc).replace(str(self.root), "the volume")
            raise InvalidArgument(field, f"refused by the tar data filter: {text}") from None
        self.entries += 1
        if self.entries > self.max_files:
            raise InvalidArgument(field, f"archive holds more than {self.max_files} entries")
        if not member.isdir():
            self.count += 1
        self.seen.add(rel)
        target = self.root / rel
        self._make_parents(rel)
        if member.isdir():
            os.mkdir(target, 0o700)
            self.dir_modes[rel] = (member.mode & 0o777) | 0o700
        elif member.isfile():
            self.total += member.size
            self._write_file(archive, member, target)
            self.regular.add(rel)
        elif member.issym():
            os.symlink(member.linkname, target)
            self.symlinks.add(rel)
        else:
            os.link(self.root / hardlink_source, target, follow_symlinks=False)

    def _check_parents(self, field: str, rel: str) -> None:
        parts = rel.split("/")
        for i in range(1, len(parts)):
            parent = "/".join(parts[:i])
            if parent in self.symlinks:
                raise InvalidArgument(field, f"path goes through the symlink {parent!r}")
            if parent in self.seen and parent not in self.dir_modes:
                raise InvalidArgument(field, f"parent {parent!r} is not a directory")

    def _make_parents(self, rel: str) -> None:
        parts = rel.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            parent = "/".join(parts[:i])
            if parent not in self.seen:
                # Implicit parent directory; a later explicit entry must not duplicate it.
                os.mkdir(self.root / parent, 0o700)
                self.seen.add(parent)
                self.implicit.add(parent)
                self.dir_modes[parent] = 0o755

    def _write_file(self, archive: tarfile.TarFile, member: tarfile.TarInfo, target: Path) -> None:
        src = archive.extractfile(member)
        if src is None:
            raise InvalidArgument(f"member {member.name[:200]!r}", "unreadable file entry")
        # Never setuid/setgid/sticky: the volume is mounted into workloads.
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW, member.mode & 0o777)
        with os.fdopen(fd, "wb") as out:
            shutil.copyfileobj(src, out, _CHUNK)
        with contextlib.suppress(OSError):
            os.utime(target, (member.mtime, member.mtime), follow_symlinks=False)

    def _check_symlink_target(self, field: str, rel: str, linkname: str) -> None:
        if not linkname:
            raise InvalidArgument(field, "symlink with an empty target")
        if "\x00" in linkname:
            raise InvalidArgument(field, "symlink target contains NUL")
        if linkname.startswith("/"):
            raise InvalidArgument(field, f"symlink to the absolute path {linkname[:200]!r}")
        resolved = posixpath.normpath(posixpath.join(posixpath.dirname(rel), linkname))
        if resolved == ".." or resolved.startswith("../"):
            raise InvalidArgument(field, f"symlink target {linkname[:200]!r} leaves the volume")
        # Through the links already extracted (a -> ., then b -> a/..): resolve for real.
        if not self._inside(self.root / posixpath.dirname(rel) / linkname):
            raise InvalidArgument(
                field, f"symlink target {linkname[:200]!r} resolves outside the volume"
            )

    def _inside(self, path: Path) -> bool:
        root = os.path.realpath(self.root)
        real = os.path.realpath(path)
        return real == root or real.startswith(root + os.sep)

    def _hardlink_source(self, field: str, linkname: str) -> str:
        try:
            src = _member_path(linkname)
        except InvalidArgument:
            raise InvalidArgument(
                field, f"hardlink target {linkname[:200]!r} leaves the volume"
            ) from None
        if src not in self.regular:
            # Only links to files this archive wrote: nothing outside can be reached.
            raise InvalidArgument(
                field, f"hardlink target {linkname[:200]!r} is not a file of this archive"
            )
        return src

    def _check_symlinks(self) -> None:
        # Lexical checks cannot see chains (a -> ., b -> a/..); the extracted tree can.
        for rel in sorted(self.symlinks):
            if not self._inside(self.root / rel):
                raise InvalidArgument(f"member {rel!r}", "symlink resolves outside the volume")


# -- tar stream writing -----------------------------------------------------------------


def _export_tree(top: Path, name: str) -> Iterator[bytes]:
    try:
        topfd = os.open(top, os.O_RDONLY | _DIRECTORY | _NOFOLLOW)
    except OSError as exc:
        raise RuntimeFailure(f"volume {name!r}: {exc.strerror}") from None
    try:
        yield from _export_fd(topfd, name)
    finally:
        os.close(topfd)


def _export_fd(topfd: int, name: str) -> Iterator[bytes]:
    links: dict[tuple[int, int], str] = {}
    try:
        # fwalk opens each directory relative to its parent's fd and checks it is the
        # directory it listed: a workload swapping a directory for a symlink mid-walk
        # cannot redirect us outside the volume.
        for dirpath, dirnames, filenames, dirfd in os.fwalk(".", dir_fd=topfd):
            rel_dir = posixpath.normpath(dirpath)
            for entry in sorted(dirnames) + sorted(filenames):
                arcname = entry if rel_dir == "." else f"{rel_dir}/{entry}"
                yield from _export_entry(dirfd, entry, arcname, links)
            dirnames.sort()
    except OSError as exc:
        raise RuntimeFailure(f"volume {name!r} cannot be exported: {exc.strerror}") from None
    # End of archive: two zero blocks, padded to tar's record size.
    yield b"\0" * tarfile.RECORDSIZE


def _export_entry(
    dirfd: int, entry: str, arcname: str, links: dict[tuple[int, int], str]
) -> Iterator[bytes]:
    try:
        st = os.stat(entry, dir_fd=dirfd, follow_symlinks=False)
    except FileNotFoundError:
        return  # removed by the workload meanwhile
    info = tarfile.TarInfo(arcname)
    info.mode = stat.S_IMODE(st.st_mode) & 0o777
    info.mtime = int(st.st_mtime)
    if stat.S_ISDIR(st.st_mode):
        info.type = tarfile.DIRTYPE
        yield info.tobuf(tarfile.PAX_FORMAT)
    elif stat.S_ISLNK(st.st_mode):
        info.type = tarfile.SYMTYPE
        info.linkname = os.readlink(entry, dir_fd=dirfd)
        yield info.tobuf(tarfile.PAX_FORMAT)
    elif stat.S_ISREG(st.st_mode):
        key = (st.st_dev, st.st_ino)
        if st.st_nlink > 1 and key in links:
            info.type = tarfile.LNKTYPE
            info.linkname = links[key]
            yield info.tobuf(tarfile.PAX_FORMAT)
            return
        try:
            fd = os.open(entry, os.O_RDONLY | _NOFOLLOW | os.O_NONBLOCK, dir_fd=dirfd)
        except FileNotFoundError:
            return
        with os.fdopen(fd, "rb") as src:
            fst = os.fstat(src.fileno())
            if not stat.S_ISREG(fst.st_mode):
                return  # swapped for something else since the stat
            if st.st_nlink > 1:
                links[key] = arcname
            info.size = fst.st_size
            yield info.tobuf(tarfile.PAX_FORMAT)
            yield from _file_body(src, info.size)
    # sockets, fifos and devices have no place in a portable volume: skipped


def _file_body(src: IO[bytes], size: int) -> Iterator[bytes]:
    # The header already promised ``size`` bytes: a file that grows or shrinks while
    # being read is cut or zero-filled so the stream stays a valid tar.
    remaining = size
    while remaining > 0:
        data = src.read(min(_CHUNK, remaining))
        if not data:
            break
        remaining -= len(data)
        yield data
    while remaining > 0:
        pad = min(_CHUNK, remaining)
        remaining -= pad
        yield b"\0" * pad
    if size % _BLOCK:
        yield b"\0" * (_BLOCK - size % _BLOCK)
