"""Pinned images: content named by its digest, checked by the node that holds it.

An orchestrator pins an application's image as ``name[:tag]@sha256:<id>``, where the
id is the image id both runtimes use: the SHA-256 of the image's config, which names
the SHA-256 of every uncompressed layer. A node never believes a tag for a pinned
image:

- it runs a pinned image only when its own copy of ``name[:tag]`` has that id;
- it exports a pinned image only when its copy has that id;
- it loads an archive for a pinned image only after checking, on the spooled bytes
  and before anything is tagged, that the config has that digest and that every
  layer has the digest the config names (regression: a compromised node served
  another tenant's image under its name, and its content ran on a healthy node);
- it keeps what it loaded for a pin under the content tag ``name:sha256-<hex>``
  (``protos.wire.images.content_ref``), never under the plain name: two tenants'
  same-named images of different content live side by side.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from node.errors import InvalidArgument, NotFound
from node.runtime.base import ContainerSpec, Runtime
from protos.wire import images

if TYPE_CHECKING:
    import tarfile

_CHUNK = 1 << 20
_MAX_SMALL = 16 << 20  # manifest and config: JSON documents, never this large


def split(ref: str) -> tuple[str, str | None]:
    """``(name[:tag], digest)`` of a reference; digest None when it is not pinned."""
    try:
        return images.split(ref)
    except images.NotPinned as exc:
        raise InvalidArgument("image", str(exc)) from None


with_tag = images.with_tag
content_ref = images.content_ref


def local_ref(runtime: Runtime, ref: str) -> str | None:
    """The reference this node holds pinned ``ref``'s exact content under (its content
    tag ``name:sha256-<hex>``, or its plain name when a seed put it there), or None.
    An unpinned ``ref`` is returned as is."""
    plain, digest = split(ref)
    if digest is None:
        return ref
    ids = runtime.image_ids()
    for candidate in (images.content_ref(ref), with_tag(plain)):
        if ids.get(candidate) == digest:
            return candidate
    return None


def require_local(runtime: Runtime, ref: str) -> str:
    """The reference to hand the runtime for ``ref``; for a pinned ``ref``, only one
    whose content has the pinned digest (else NotFound: it must be fetched)."""
    local = local_ref(runtime, ref)
    if local is None:
        raise NotFound(f"image {ref} is not on this node")
    return local


def runnable(runtime: Runtime, spec: ContainerSpec) -> ContainerSpec:
    """``spec`` with its image as the runtime names it, after the pin was checked."""
    local = require_local(runtime, spec.image)
    return spec if local == spec.image else replace(spec, image=local)


def verify_archive(path: Path, digest: str) -> None:
    """Raise InvalidArgument unless the docker-save archive at ``path`` holds exactly one
    image whose config has SHA-256 ``digest`` and whose layers have the SHA-256s the
    config lists (uncompressed, as ``docker save`` and the process runtime write them).

    The precise mismatch is in the message for the node's log; the orchestrator's task
    completion carries it too (it tells a caller nothing it did not send)."""
    import tarfile  # here: every agent imports this module; few ever verify an archive

    try:
        with tarfile.open(path, "r:") as tar:
            manifest = json.loads(_small(tar, "manifest.json"))
            if not isinstance(manifest, list) or len(manifest) != 1:
                raise InvalidArgument("data", "a pinned image archive holds exactly one image")
            entry = manifest[0]
            if not isinstance(entry, dict):
                raise InvalidArgument("data", "malformed manifest.json")
            config_raw = _small(tar, str(entry.get("Config", "")))
            got = "sha256:" + hashlib.sha256(config_raw).hexdigest()
            if got != digest:
                raise InvalidArgument("data", f"the image is {got}, not the pinned {digest}")
            config = json.loads(config_raw)
            diff_ids = config["rootfs"]["diff_ids"]
            layers = entry.get("Layers")
            if not isinstance(layers, list) or not isinstance(diff_ids, list):
                raise InvalidArgument("data", "malformed manifest or config")
            if len(layers) != len(diff_ids):
                raise InvalidArgument("data", "manifest and config disagree on the layers")
            for name, want in zip(layers, diff_ids, strict=True):
                have = _layer_digest(tar, str(name))
                if have != want:
                    raise InvalidArgument("data", f"layer {str(name)[:80]!r} is {have}, not {want}")
    except (KeyError, TypeError, ValueError, tarfile.TarError) as exc:
        raise InvalidArgument("data", f"not a verifiable image archive: {exc}") from None


def _member(tar: tarfile.TarFile, name: str) -> tarfile.TarInfo:
    member = tar.getmember(name.removeprefix("./"))
    if not member.isfile():
        raise InvalidArgument("data", f"{name[:80]!r} is not a regular file")
    return member


def _small(tar: tarfile.TarFile, name: str) -> bytes:
    member = _member(tar, name)
    if member.size > _MAX_SMALL:
        raise InvalidArgument("data", f"{name[:80]!r} is too large")
    fh = tar.extractfile(member)
    if fh is None:
        raise InvalidArgument("data", f"{name[:80]!r} is not a file")
    return fh.read()


def _layer_digest(tar: tarfile.TarFile, name: str) -> str:
    fh = tar.extractfile(_member(tar, name))
    if fh is None:
        raise InvalidArgument("data", f"{name[:80]!r} is not a file")
    h = hashlib.sha256()
    while chunk := fh.read(_CHUNK):
        h.update(chunk)
    return "sha256:" + h.hexdigest()
