"""Pinned image references, as both sides read them: ``name[:tag]@sha256:<image id>``.

The image id is what both runtimes call it: the SHA-256 of the image's config, which
names the SHA-256 of every uncompressed layer; so the id names the whole content.
There is no registry, so a digest here never means a registry manifest digest.
"""

from __future__ import annotations

from protos.wire.rules import IMAGE_ID_RE


class NotPinned(ValueError):
    """The text after ``@`` is not a ``sha256:<64 hex>`` digest."""


def split(ref: str) -> tuple[str, str | None]:
    """``(name[:tag], digest)`` of a reference; digest None when it is not pinned."""
    plain, at, digest = ref.partition("@")
    if not at:
        return ref, None
    if not IMAGE_ID_RE.fullmatch(digest):
        raise NotPinned(f"{ref[:120]!r} has no sha256 digest after '@'")
    return plain, digest


def with_tag(ref: str) -> str:
    """A plain reference with its implicit ``:latest`` (the form runtimes list refs in)."""
    last = ref.rsplit("/", 1)[-1]
    return ref if ":" in last else f"{ref}:latest"


def pin(ref: str, digest: str) -> str:
    """The pinned form of a plain reference: ``name:tag@sha256:...``."""
    return f"{with_tag(ref)}@{digest}"


def name_of(ref: str) -> str:
    """A plain reference without its tag (``localhost:5000/app:1`` -> ``localhost:5000/app``)."""
    head, slash, last = ref.rpartition("/")
    return f"{head}{slash}{last.partition(':')[0]}"


def content_ref(pinned: str) -> str:
    """The tag a node keeps a pinned image under: ``name:sha256-<hex>``, named by its
    content, so two tenants' same-named images of different content never move each
    other's tag on a node."""
    plain, digest = split(pinned)
    if digest is None:
        raise NotPinned(f"{pinned[:120]!r} has no @sha256: digest")
    return f"{name_of(plain)}:sha256-{digest.removeprefix('sha256:')}"


def content_key(ref: str) -> str:
    """``name@sha256:...`` of a pinned reference, whatever its tag: what a node holding
    that content is said to hold."""
    plain, digest = split(ref)
    return f"{name_of(plain)}@{digest}" if digest is not None else with_tag(ref)
