"""The process runtime's image store: content-addressed layers, a JSON index of refs.

Format. An image is what ``docker save`` writes and ``docker load`` reads: a config
JSON (its SHA-256 is the image id) naming the SHA-256 of each *uncompressed*
layer tar in ``rootfs.diff_ids``, and the layer tars. A plain root-filesystem
tarball (what ``docker import`` takes) is a one-layer image whose config we write
ourselves, deterministically, so the same tarball always gives the same id.
Exports are docker-save archives, so images move process node -> process node and
process node -> ``docker load`` alike.

On disk, under ``<state_dir>/images/``::

    index.json            {"refs": {"local/busybox:1": "sha256:<image id>"}}
    blobs/sha256/<hex>    configs and uncompressed layer tars, named by their digest
    rootfs/<hex>/         the image's layers applied in order (what workloads run from)
    tmp/                  imports in progress; a crash leaves only garbage here

Images come from peers that may be compromised, so every layer digest is checked
against the config, and layers are applied with the ``data`` extraction filter
(no absolute paths, nothing outside the root, no device files, no setuid bits);
absolute symlinks are rewritten to point inside the root filesystem, because the
runtime does not chroot and such a link would otherwise name a host file.
"""

from __future__ import annotations

import bz2
import contextlib
import errno
import gzip
import hashlib
import io
import json
import lzma
import os
import platform
import re
import shutil
import tarfile
import tempfile
import threading
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from node.errors import InvalidArgument, NotFound

_COPY_CHUNK = 1 << 20
DEFAULT_MAX_IMAGE_BYTES = 4 << 30

_REF_RE = re.compile(
    r"^(?:[a-z0-9.-]+(?::[0-9]{1,5})?/)?"
    r"[a-z0-9]+(?:[._-][a-z0-9]+)*(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*"
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?$"
)
_ID_RE = re.compile(r"^sha256:[0-9a-f]{64}$")

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def normalize_ref(ref: str) -> str:
    """Check an image reference and add the implicit ``:latest`` tag."""
    if len(ref) > 255 or not _REF_RE.match(ref):
        raise InvalidArgument("image", f"{ref!r} is not a valid image reference")
    last = ref.rsplit("/", 1)[-1]
    return ref if ":" in last else f"{ref}:latest"


@dataclass(frozen=True)
class ImageConfig:
    image_id: str  # "sha256:<hex>"
    env: tuple[tuple[str, str], ...]
    entrypoint: tuple[str, ...]
    cmd: tuple[str, ...]
    diff_ids: tuple[str, ...]


def _parse_config(raw: bytes) -> ImageConfig:
    try:
        doc = json.loads(raw)
        cfg = doc.get("config") or {}
        env: list[tuple[str, str]] = []
        for item in cfg.get("Env") or []:
            key, sep, value = str(item).partition("=")
            if sep:
                env.append((key, value))
        diff_ids = tuple(str(d) for d in doc["rootfs"]["diff_ids"])
        entrypoint = tuple(str(a) for a in cfg.get("Entrypoint") or [])
        cmd = tuple(str(a) for a in cfg.get("Cmd") or [])
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise InvalidArgument("image", f"malformed image config: {exc}") from None
    for d in diff_ids:
        if not _ID_RE.match(d):
            raise InvalidArgument("image", f"malformed layer digest {d!r}")
    return ImageConfig(
        image_id="sha256:" + hashlib.sha256(raw).hexdigest(),
        env=tuple(env),
        entrypoint=entrypoint,
        cmd=cmd,
        diff_ids=diff_ids,
    )


def _docker_arch() -> str:
    machine = platform.machine()
    return {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm"}.get(machine, machine)


def rootfs_config(diff_id: str, env: tuple[tuple[str, str], ...]) -> bytes:
    """The config of a one-layer image made from a plain root filesystem tarball."""
    doc = {
        "architecture": _docker_arch(),
        "os": "linux",
        "config": {"Env": [f"{k}={v}" for k, v in env]},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
    }
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def _open_decompressed(raw: IO[bytes]) -> io.BufferedIOBase:
    """Wrap ``raw`` so it reads as an uncompressed stream (gzip, bzip2, xz or plain)."""
    head = raw.read(6)
    rest = io.BufferedReader(_Prefixed(head, raw))
    if head.startswith(b"\x1f\x8b"):
        return gzip.GzipFile(fileobj=rest, mode="rb")
    if head.startswith(b"BZh"):
        return bz2.BZ2File(rest, mode="rb")
    if head.startswith(b"\xfd7zXZ\x00"):
        return lzma.LZMAFile(rest, mode="rb")
    return rest


class _Prefixed(io.RawIOBase):
    """A read-only stream: ``head`` then whatever ``tail`` still holds."""

    def __init__(self, head: bytes, tail: IO[bytes]) -> None:
        self._head = head
        self._tail = tail

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        if self._head:
            n = min(len(view), len(self._head))
            view[:n] = self._head[:n]
            self._head = self._head[n:]
            return n
        data = self._tail.read(len(view))
        view[: len(data)] = data
        return len(data)


def _tar_member(name: str, size: int, chunks: Iterable[bytes]) -> Iterator[bytes]:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mode = 0o644
    info.mtime = 0
    yield info.tobuf(format=tarfile.PAX_FORMAT)
    yield from chunks
    pad = (-size) % tarfile.BLOCKSIZE
    if pad:
        yield b"\0" * pad


def _file_chunks(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as fh:
        while chunk := fh.read(_COPY_CHUNK):
            yield chunk


class ImageStore:
    """Images of one process runtime, under ``root`` (``<state_dir>/images``)."""

    def __init__(self, root: Path, *, max_bytes: int = DEFAULT_MAX_IMAGE_BYTES) -> None:
        self.root = Path(root)
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        for sub in ("blobs/sha256", "rootfs", "tmp"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        self._index_path = self.root / "index.json"

    # -- index ----------------------------------------------------------------------

    def _refs(self) -> dict[str, str]:
        try:
            doc = json.loads(self._index_path.read_text("utf-8"))
        except FileNotFoundError:
            return {}
        refs = doc.get("refs", {}) if isinstance(doc, dict) else {}
        return {str(k): str(v) for k, v in refs.items()}

    def _write_refs(self, refs: dict[str, str]) -> None:
        data = json.dumps({"refs": refs}, sort_keys=True, indent=1).encode()
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".index.")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self._index_path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    def resolve(self, ref: str) -> str:
        """The image id a ref (or an image id) names; NotFound otherwise."""
        if _ID_RE.match(ref):
            if (self.rootfs_dir(ref)).is_dir():
                return ref
            raise NotFound(f"image {ref} does not exist on this node")
        image_id = self._refs().get(normalize_ref(ref))
        if image_id is None:
            raise NotFound(f"image {ref} does not exist on this node")
        return image_id

    def exists(self, ref: str) -> bool:
        try:
            self.resolve(ref)
        except NotFound:
            return False
        return True

    def refs(self) -> dict[str, str]:
        return self._refs()

    def _blob(self, digest: str) -> Path:
        return self.root / "blobs" / "sha256" / digest.removeprefix("sha256:")

    def rootfs_dir(self, image_id: str) -> Path:
        return self.root / "rootfs" / image_id.removeprefix("sha256:")

    def config(self, ref: str) -> ImageConfig:
        image_id = self.resolve(ref)
        return _parse_config(self._blob(image_id).read_bytes())

    # -- import -----------------------------------------------------------------------

    def _spool(self, chunks: Iterable[bytes], tmpdir: Path) -> Path:
        path = tmpdir / "upload"
        total = 0
        with open(path, "wb") as fh:
            for chunk in chunks:
                total += len(chunk)
                if total > self.max_bytes:
                    raise InvalidArgument("image", f"archive exceeds {self.max_bytes} bytes")
                fh.write(chunk)
        return path

    def _store_layer(self, stream: IO[bytes], tmpdir: Path, expect: str | None = None) -> str:
        """Copy a (possibly compressed) layer into the blob store; return its diff id.

        With ``expect``, a layer of another digest is refused before it is stored.
        """
        digest = hashlib.sha256()
        fd, tmp = tempfile.mkstemp(dir=tmpdir, prefix="layer.")
        total = 0
        with os.fdopen(fd, "wb") as out, _open_decompressed(stream) as plain:
            while chunk := plain.read(_COPY_CHUNK):
                total += len(chunk)
                if total > self.max_bytes:
                    raise InvalidArgument("image", f"layer exceeds {self.max_bytes} bytes")
                digest.update(chunk)
                out.write(chunk)
        diff_id = "sha256:" + digest.hexdigest()
        if expect is not None and diff_id != expect:
            raise InvalidArgument(
                "image", f"a layer has digest {diff_id}, its config says {expect}"
            )
        os.replace(tmp, self._blob(diff_id))
        return diff_id

    def _store_image(self, config_raw: bytes, tmpdir: Path) -> ImageConfig:
        config = _parse_config(config_raw)
        for diff_id in config.diff_ids:
            if not self._blob(diff_id).is_file():
                raise InvalidArgument("image", f"layer {diff_id} is missing from the archive")
        rootfs = self.rootfs_dir(config.image_id)
        if not rootfs.is_dir():
            staging = tmpdir / "rootfs"
            staging.mkdir()
            for diff_id in config.diff_ids:
                _apply_layer(self._blob(diff_id), staging)
            try:
                os.rename(staging, rootfs)
            except OSError:
                if not rootfs.is_dir():  # lost a race with an identical import: fine
                    raise
        blob = self._blob(config.image_id)
        if not blob.is_file():
            tmp = tmpdir / "config.json"
            tmp.write_bytes(config_raw)
            os.replace(tmp, blob)
        return config

    def _register(self, refs: list[str], image_id: str) -> None:
        with self._lock:
            current = self._refs()
            for ref in refs:
                current[ref] = image_id
            self._write_refs(current)

    def import_archive(self, chunks: Iterable[bytes]) -> list[str]:
        """Import a docker-save archive; returns the refs it registered."""
        try:
            return self._import_archive(chunks)
        except (tarfile.TarError, EOFError, zlib.error, lzma.LZMAError) as exc:
            # Truncated or corrupt members surface while reading, not at open.
            raise InvalidArgument("image", f"malformed archive: {exc}") from None
        except (ValueError, RecursionError) as exc:
            # Names with NUL bytes reach path functions as ValueError; a chain of links
            # that refer to each other exhausts tarfile's link resolution (both found by
            # bench/fuzz.py): the archive's fault, never an INTERNAL error.
            raise InvalidArgument("image", f"unusable archive member: {exc}") from None
        except OSError as exc:
            # The decompressors (gzip, bz2) report corrupt data as an OSError without an
            # errno; an OSError with one came from a system call on the node's own disk.
            if exc.errno is not None:
                raise
            raise InvalidArgument("image", f"malformed archive: {exc}") from None

    def _import_archive(self, chunks: Iterable[bytes]) -> list[str]:
        with tempfile.TemporaryDirectory(dir=self.root / "tmp") as tmp:
            tmpdir = Path(tmp)
            upload = self._spool(chunks, tmpdir)
            try:
                outer = tarfile.open(upload, "r:*")  # noqa: SIM115 - closed by `with outer`
            except tarfile.TarError:
                raise InvalidArgument("image", "the archive is not a tar file") from None
            with outer:
                try:
                    manifest_member = outer.getmember("manifest.json")
                except KeyError:
                    raise InvalidArgument(
                        "image",
                        "the archive has no manifest.json (a plain root filesystem tar"
                        " must be imported with an explicit ref)",
                    ) from None
                try:
                    manifest = json.loads(_read_member(outer, manifest_member))
                    if not isinstance(manifest, list):
                        raise TypeError("manifest.json is not a list")
                    plans: list[tuple[str, list[str], list[str]]] = []
                    for entry in manifest:
                        tags = [normalize_ref(str(t)) for t in entry.get("RepoTags") or []]
                        layers = [str(x) for x in entry["Layers"]]
                        plans.append((str(entry["Config"]), tags, layers))
                except (ValueError, KeyError, TypeError, AttributeError) as exc:
                    raise InvalidArgument("image", f"malformed manifest.json: {exc}") from None
                registered: list[str] = []
                for config_name, tags, layers in plans:
                    if not tags:
                        raise InvalidArgument("image", "the archive names an image without a tag")
                    config_raw = _read_member(outer, _member(outer, config_name))
                    expected = _parse_config(config_raw).diff_ids
                    if len(expected) != len(layers):
                        raise InvalidArgument("image", "manifest and config disagree on layers")
                    for want, layer_name in zip(expected, layers, strict=True):
                        fileobj = outer.extractfile(_member(outer, layer_name))
                        if fileobj is None:
                            raise InvalidArgument("image", f"layer {layer_name} is not a file")
                        self._store_layer(fileobj, tmpdir, expect=want)
                    config = self._store_image(config_raw, tmpdir)
                    self._register(tags, config.image_id)
                    registered.extend(tags)
                return registered

    def import_rootfs(
        self,
        ref: str,
        chunks: Iterable[bytes],
        *,
        env: tuple[tuple[str, str], ...] = (("PATH", DEFAULT_PATH),),
    ) -> list[str]:
        """Import a plain root filesystem tarball (gzip/bzip2/xz or not) under ``ref``."""
        ref = normalize_ref(ref)
        with tempfile.TemporaryDirectory(dir=self.root / "tmp") as tmp:
            tmpdir = Path(tmp)
            upload = self._spool(chunks, tmpdir)
            with open(upload, "rb") as fh:
                diff_id = self._store_layer(fh, tmpdir)
            try:
                with tarfile.open(self._blob(diff_id), "r:"):
                    pass
            except tarfile.TarError:
                raise InvalidArgument("image", "the root filesystem is not a tar file") from None
            config = self._store_image(rootfs_config(diff_id, env), tmpdir)
            self._register([ref], config.image_id)
        return [ref]

    # -- export -----------------------------------------------------------------------

    def export(self, ref: str) -> Iterator[bytes]:
        """Stream a docker-save archive of ``ref`` (tagged ``ref`` only)."""
        image_id = self.resolve(ref)
        config_path = self._blob(image_id)
        config = _parse_config(config_path.read_bytes())
        tags = [normalize_ref(ref)] if not _ID_RE.match(ref) else []
        hex_id = image_id.removeprefix("sha256:")
        layer_names = [f"{d.removeprefix('sha256:')}/layer.tar" for d in config.diff_ids]
        manifest = json.dumps(
            [{"Config": f"{hex_id}.json", "RepoTags": tags, "Layers": layer_names}]
        ).encode()

        def stream() -> Iterator[bytes]:
            yield from _tar_member("manifest.json", len(manifest), [manifest])
            yield from _tar_member(
                f"{hex_id}.json", config_path.stat().st_size, _file_chunks(config_path)
            )
            for diff_id, name in zip(config.diff_ids, layer_names, strict=True):
                blob = self._blob(diff_id)
                yield from _tar_member(name, blob.stat().st_size, _file_chunks(blob))
            yield b"\0" * (2 * tarfile.BLOCKSIZE)

        return stream()


def _member(tar: tarfile.TarFile, name: str) -> tarfile.TarInfo:
    try:
        member = tar.getmember(name.removeprefix("./"))
    except KeyError:
        raise InvalidArgument("image", f"the archive lacks {name!r}") from None
    return member


def _read_member(tar: tarfile.TarFile, member: tarfile.TarInfo) -> bytes:
    if not member.isfile() or member.size > 16 << 20:
        raise InvalidArgument("image", f"{member.name} is not a small regular file")
    fh = tar.extractfile(member)
    if fh is None:
        raise InvalidArgument("image", f"{member.name} is not a file")
    return fh.read()


def _inside(root: Path, path: str) -> bool:
    real = os.path.realpath(path)
    base = os.path.realpath(root)
    return os.path.commonpath([real, base]) == base


def _remove_path(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.unlink(path)


# Errors of the node's own disk, not of the archive: reported as such, never blamed on input.
_HOST_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS, errno.ENOMEM})


def _layer_name(raw: str) -> str:
    """The member's path relative to the root; refuses any path that climbs out of it."""
    name = os.path.normpath(raw.lstrip("/"))
    if name == ".." or name.startswith("../"):
        raise InvalidArgument("image", f"{raw!r} escapes the root")
    return "" if name == "." else name


def _whiteout_target(root: Path, parent_path: str, raw: str, hidden: str) -> str:
    """The path a whiteout ``.wh.<hidden>`` deletes: one entry of its own directory.

    ``hidden`` is what follows ``.wh.``; ``..`` or ``.`` would name the directory's
    parent or the directory itself (regression: ``.wh...`` at the top of a layer
    removed the staging root's parent and ended in INTERNAL)."""
    if hidden in ("", ".", "..") or "/" in hidden or "\x00" in hidden:
        raise InvalidArgument("image", f"whiteout {raw[:200]!r} names no entry of its directory")
    target = os.path.join(parent_path, hidden)
    if not _inside(root, os.path.dirname(target)) or os.path.realpath(target) == os.path.realpath(
        root
    ):
        raise InvalidArgument("image", f"whiteout {raw[:200]!r} escapes the root")
    return target


def _apply_whiteout(root: Path, parent: str, base: str, raw: str) -> None:
    parent_path = os.path.join(root, parent)
    if not _inside(root, parent_path):
        raise InvalidArgument("image", f"whiteout {raw!r} escapes the root")
    if base == ".wh..wh..opq":
        if os.path.isdir(parent_path) and not os.path.islink(parent_path):
            for entry in os.listdir(parent_path):
                _remove_path(os.path.join(parent_path, entry))
        return
    _remove_path(_whiteout_target(root, parent_path, raw, base[len(".wh.") :]))


def _apply_member(tar: tarfile.TarFile, member: tarfile.TarInfo, root: Path) -> None:
    name = _layer_name(member.name)
    if not name:
        return
    parent, base = os.path.split(name)
    if base.startswith(".wh."):
        _apply_whiteout(root, parent, base, member.name)
        return
    if member.ischr() or member.isblk() or member.isfifo():
        return  # device nodes are meaningless without a chroot
    if member.issym() and os.path.isabs(member.linkname):
        inside = os.path.relpath(
            os.path.join("/", member.linkname.lstrip("/")), os.path.join("/", parent)
        )
        member = member.replace(linkname=inside, deep=False)
    member = member.replace(name=name, deep=False)
    parent_path = os.path.join(root, parent)
    if not _inside(root, parent_path):
        raise InvalidArgument("image", f"{member.name} escapes the root")
    target = os.path.join(root, name)
    if os.path.lexists(target) and not (
        member.isdir() and os.path.isdir(target) and not os.path.islink(target)
    ):
        _remove_path(target)
    tar.extract(member, root, set_attrs=True, filter="data")


def _apply_layer(layer: Path, root: Path) -> None:
    """Apply one uncompressed layer tar onto ``root`` (whiteouts included).

    Every failure the layer's content can cause is INVALID_ARGUMENT naming the member;
    only the node's own disk failing is not the archive's fault.
    """
    try:
        with tarfile.open(layer, "r:") as tar:
            for member in tar:
                try:
                    _apply_member(tar, member, root)
                except KeyError as exc:  # a hardlink to a member the layer lacks
                    raise InvalidArgument(
                        "image", f"{member.name!r} links to a missing member: {exc}"
                    ) from None
                except OSError as exc:
                    if exc.errno in _HOST_ERRNOS:
                        raise
                    raise InvalidArgument(
                        "image", f"{member.name!r} cannot be applied: {exc.strerror}"
                    ) from None
    except tarfile.FilterError as exc:
        raise InvalidArgument("image", f"unsafe layer member: {exc}") from None
    except tarfile.TarError as exc:
        raise InvalidArgument("image", f"malformed layer: {exc}") from None
