"""Rewriting docker-save archives as they stream through the node.

Both directions re-emit the archive member by member (never spooling it), editing
only the small files that name images:

- export: the engine saved the node-scoped tag; the archive must name the plain ref
  (``retag_export``), because the receiver checks that the archive tags exactly the
  image its token names;
- import: the archive's names are removed before ``docker load`` sees them
  (``ImportedArchive``), so a load never moves a tag of the shared engine (not even
  ``local/busybox:1``, which nodes are seeded from); the node then tags each loaded
  image id itself. The id of each image is the SHA-256 of its config, hashed here
  as it passes, never taken from a file name the archive chose.

The files: ``manifest.json`` (``RepoTags``), the legacy ``repositories`` and, in
archives of newer engines, the OCI ``index.json`` (name annotations).
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import lzma
import posixpath
import tarfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from node.errors import InvalidArgument, NodeError, RuntimeFailure
from node.runtime._docker_names import docker_full_name, split_ref

CHUNK = 256 * 1024
MAX_SMALL_FILE = 16 << 20  # manifests and configs; larger members are only passed on
MANIFEST = "manifest.json"
REPOSITORIES = "repositories"
OCI_INDEX = "index.json"
_NAMING_FILES = frozenset({MANIFEST, REPOSITORIES, OCI_INDEX})
_NAME_ANNOTATION = "io.containerd.image.name"
_TAG_ANNOTATION = "org.opencontainers.image.ref.name"
_EOF = b"\0" * (2 * tarfile.BLOCKSIZE)
# What a truncated or corrupt (possibly compressed) tar stream raises while read.
_READ_ERRORS = (tarfile.TarError, EOFError, zlib.error, lzma.LZMAError, OSError, ValueError)

Edit = Callable[[str, bytes], "bytes | None"]


class _ChunkReader(io.RawIOBase):
    """A readable stream over an iterable of byte chunks."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks = iter(chunks)
        self._buf = b""
        self._pos = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        while self._pos >= len(self._buf):
            chunk = next(self._chunks, None)
            if chunk is None:
                return 0
            if not isinstance(chunk, bytes | bytearray | memoryview):
                raise InvalidArgument("data", "image chunks must be bytes")
            self._buf, self._pos = bytes(chunk), 0
        n = min(len(view), len(self._buf) - self._pos)
        view[:n] = self._buf[self._pos : self._pos + n]
        self._pos += n
        return n


def _member_name(name: str) -> str:
    return posixpath.normpath(name.lstrip("/"))


def _header(member: tarfile.TarInfo) -> bytes:
    return member.tobuf(format=tarfile.PAX_FORMAT, encoding="utf-8", errors="surrogateescape")


def _padding(size: int) -> bytes:
    return b"\0" * ((-size) % tarfile.BLOCKSIZE)


def _reemit(
    chunks: Iterable[bytes],
    edit: Edit,
    *,
    digests: dict[str, str] | None,
    fail: Callable[[str], NodeError],
) -> Iterator[bytes]:
    """The archive again, its naming files passed through ``edit`` (None drops one);
    ``digests`` collects the SHA-256 of every small regular member by name."""
    try:
        tar = tarfile.open(fileobj=_ChunkReader(chunks), mode="r|*", bufsize=CHUNK)  # noqa: SIM115
    except _READ_ERRORS as exc:
        raise fail(f"not a tar archive ({exc})") from None
    try:
        with tar:
            for member in tar:
                name = _member_name(member.name)
                if not member.isfile():
                    yield _header(member)
                    continue
                source = tar.extractfile(member)
                if source is None:
                    raise fail(f"{member.name!r} cannot be read")
                if name in _NAMING_FILES:
                    if member.size > MAX_SMALL_FILE:
                        raise fail(f"{name} is larger than {MAX_SMALL_FILE} bytes")
                    data = edit(name, source.read())
                    if data is None:
                        continue
                    edited = copy.copy(member)
                    edited.size = len(data)
                    yield _header(edited) + data + _padding(len(data))
                    continue
                yield _header(member)
                digest = hashlib.sha256() if member.size <= MAX_SMALL_FILE else None
                while chunk := source.read(CHUNK):
                    if digest is not None:
                        digest.update(chunk)
                    yield chunk
                yield _padding(member.size)
                if digest is not None and digests is not None:
                    digests[name] = digest.hexdigest()
    except NodeError:
        raise
    except _READ_ERRORS as exc:
        raise fail(f"malformed tar archive ({exc})") from None
    yield _EOF


def _json(data: bytes, name: str, fail: Callable[[str], NodeError]) -> Any:
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise fail(f"{name} is not JSON ({exc})") from None


def _dump(doc: Any) -> bytes:
    return json.dumps(doc, separators=(",", ":")).encode("utf-8")


# -- export ---------------------------------------------------------------------------


def _export_failure(message: str) -> NodeError:
    return RuntimeFailure(f"image export: the engine's archive: {message}")


def retag_export(chunks: Iterable[bytes], ref: str) -> Iterator[bytes]:
    """A ``docker save`` archive of one name, re-emitted as an archive of ``ref`` alone."""
    name, tag = split_ref(ref)

    def edit(member: str, data: bytes) -> bytes | None:
        doc = _json(data, member, _export_failure)
        if member == MANIFEST:
            if not isinstance(doc, list) or len(doc) != 1 or not isinstance(doc[0], dict):
                raise _export_failure("manifest.json does not describe exactly one image")
            doc[0]["RepoTags"] = [ref]
        elif member == REPOSITORIES:
            layers = [
                layer
                for tags in (doc.values() if isinstance(doc, dict) else ())
                if isinstance(tags, dict)
                for layer in tags.values()
            ]
            if len(layers) != 1:
                raise _export_failure("repositories does not name exactly one image")
            doc = {name: {tag: layers[0]}}
        else:
            descriptors = doc.get("manifests") if isinstance(doc, dict) else None
            for descriptor in descriptors if isinstance(descriptors, list) else ():
                notes = descriptor.get("annotations") if isinstance(descriptor, dict) else None
                if isinstance(notes, dict):
                    if _NAME_ANNOTATION in notes:
                        notes[_NAME_ANNOTATION] = docker_full_name(ref)
                    if _TAG_ANNOTATION in notes:
                        notes[_TAG_ANNOTATION] = tag
        return _dump(doc)

    return _reemit(chunks, edit, digests=None, fail=_export_failure)


# -- import ---------------------------------------------------------------------------


def _import_failure(message: str) -> NodeError:
    return InvalidArgument("data", message)


class ImportedArchive:
    """An archive on its way into ``docker load``, stripped of its image names.

    Iterate ``stream()`` (what the engine loads); afterwards ``images()`` says which
    image ids the archive held and under which names.
    """

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks = chunks
        self._digests: dict[str, str] = {}
        self._manifest: list[tuple[str, list[str]]] | None = None
        self._done = False

    def stream(self) -> Iterator[bytes]:
        yield from _reemit(self._chunks, self._edit, digests=self._digests, fail=_import_failure)
        self._done = True

    def _edit(self, member: str, data: bytes) -> bytes | None:
        if member != MANIFEST:
            # Names only: the legacy loader ignores these when manifest.json exists.
            return None
        doc = _json(data, member, _import_failure)
        if not isinstance(doc, list):
            raise _import_failure("manifest.json is not a list")
        entries: list[tuple[str, list[str]]] = []
        for entry in doc:
            if not isinstance(entry, dict) or not isinstance(entry.get("Config"), str):
                raise _import_failure("manifest.json has an entry without a config")
            tags = entry.get("RepoTags") or []
            if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
                raise _import_failure("manifest.json has malformed RepoTags")
            entries.append((entry["Config"], list(tags)))
            entry["RepoTags"] = []
        self._manifest = entries
        return _dump(doc)

    def images(self) -> list[tuple[str, list[str]]]:
        """``(image id, names)`` per image of the archive, the id hashed from its config."""
        if not self._done:
            raise RuntimeError("images() before the archive was read to its end")
        if self._manifest is None:
            raise InvalidArgument("data", "the archive has no manifest.json")
        out: list[tuple[str, list[str]]] = []
        for config, tags in self._manifest:
            digest = self._digests.get(_member_name(config))
            if digest is None:
                raise InvalidArgument("data", f"the archive lacks its config {config[:80]!r}")
            out.append(("sha256:" + digest, tags))
        return out
