"""Node-scoped image tags: how one node's images are told apart on a shared engine.

Docker tags are global to an engine, so when several node agents share one engine,
"the engine has ``local/busybox:1``" says nothing about which node received it. A
node therefore owns the repository namespace ``capstan-<node hash>/`` and has image
``R`` exactly when the engine holds the node-scoped tag ``node_ref(R)``.

The mapping of a reference ``[registry[:port]/]path[:tag]`` into that namespace is
reversible, so the engine's tags are the only record (no index file to drift):

- the tag is kept verbatim (``latest`` when the reference has none);
- a reference without a registry keeps its path: ``local/busybox:1`` ->
  ``capstan-<h>/local/busybox:1``;
- a registry (Docker's rule: the first of several components, when it has a dot or
  a port or is ``localhost``) becomes one path component starting with ``r.``:
  lower-case registries stay readable with the port's ``:`` written ``__``
  (``localhost:5000/app`` -> ``capstan-<h>/r.localhost__5000/app:latest``); a
  registry with upper-case letters is written ``r.x<hex of its bytes>``.

Why it cannot collide: a registry-less reference of several components never has a
dot in its first component (that would make it a registry), while an encoded
registry always does (``r.``); the readable form of a registry always holds a dot, a
``__`` or is ``localhost``, the hex form never does; registries hold no ``_``, so
``__`` marks the port unambiguously. Digest references (``@sha256:``) have no
node-scoped form: without a registry no node ever has them.
"""

from __future__ import annotations

import hashlib
import re

from node.errors import InvalidArgument
from node.validation import validate_image_ref

NAMESPACE_PREFIX = "capstan-"
DEFAULT_TAG = "latest"
MAX_NAME = 255  # Docker's cap on a repository name
_REGISTRY_MARK = "r."
_HEX_MARK = "x"
_HEX_RE = re.compile(r"^x(?:[0-9a-f]{2})+$")


def node_hash(node_id: str) -> str:
    """The short, name-safe tag of a node id used in Docker names."""
    return hashlib.sha256(node_id.encode("utf-8")).hexdigest()[:12]


def namespace(node_id: str) -> str:
    """The repository prefix every node-scoped tag of ``node_id`` starts with."""
    return f"{NAMESPACE_PREFIX}{node_hash(node_id)}/"


def split_ref(ref: str) -> tuple[str, str]:
    """``(name, tag)`` of a validated, digest-free reference; the tag defaults to latest."""
    name, colon, tag = ref.rpartition(":")
    if not colon or "/" in tag:  # the only colon is a registry port, or there is none
        return ref, DEFAULT_TAG
    return name, tag


def _is_registry(components: list[str]) -> bool:
    first = components[0]
    return len(components) > 1 and ("." in first or ":" in first or first == "localhost")


def _encode_registry(registry: str) -> str:
    if registry == registry.lower():
        return _REGISTRY_MARK + registry.replace(":", "__")
    return _REGISTRY_MARK + _HEX_MARK + registry.encode("utf-8").hex()


def _decode_registry(component: str) -> str | None:
    body = component.removeprefix(_REGISTRY_MARK)
    if "." in body or "__" in body or body == "localhost":
        return body.replace("__", ":")
    if _HEX_RE.fullmatch(body):
        try:
            return bytes.fromhex(body[1:]).decode("utf-8")
        except UnicodeDecodeError:
            return None
    return None


def node_ref(prefix: str, ref: str) -> str:
    """The node-scoped tag of ``ref`` (validated, no digest) under namespace ``prefix``."""
    name, tag = split_ref(ref)
    components = name.split("/")
    if _is_registry(components):
        components[0] = _encode_registry(components[0])
    scoped = prefix + "/".join(components)
    if len(scoped) > MAX_NAME:
        raise InvalidArgument(
            "ref", f"{ref[:80]!r} is too long for a node-scoped name ({MAX_NAME} characters)"
        )
    return f"{scoped}:{tag}"


def ref_of(prefix: str, scoped: str) -> str | None:
    """The reference a node-scoped tag stands for (always with its tag); None when
    ``scoped`` is not a tag this mapping makes under ``prefix``."""
    if not scoped.startswith(prefix):
        return None
    name, tag = split_ref(scoped[len(prefix) :])
    components = name.split("/")
    if len(components) > 1 and "." in components[0]:
        registry = _decode_registry(components[0])
        if registry is None:
            return None
        components[0] = registry
    ref = f"{'/'.join(components)}:{tag}"
    # Only an exact round trip counts: a hand-made tag in the namespace is not an image.
    try:
        validate_image_ref("ref", ref)
        return ref if node_ref(prefix, ref) == scoped else None
    except InvalidArgument:
        return None


def docker_full_name(ref: str) -> str:
    """Docker's fully qualified form of ``ref`` (``docker.io/library/...``), as OCI
    archives annotate it."""
    name, tag = split_ref(ref)
    components = name.split("/")
    if not _is_registry(components):
        name = "docker.io/" + (name if len(components) > 1 else f"library/{name}")
    return f"{name}:{tag}"
