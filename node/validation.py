"""Input rules for everything a caller can put into a node: one place, used by both
runtimes and the gRPC layer.

Each check raises ``InvalidArgument(field, message)`` with ``field`` naming the exact
request field (``env[3].name``, ``volumes[0].path``) so a caller can fix its input.
The rules are deliberately narrower than what Docker accepts: names and paths end up
in container names, labels, bind mounts and file paths on the host.
"""

from __future__ import annotations

import math
import posixpath
import re
from collections.abc import Iterable

from node.errors import InvalidArgument
from node.runtime.base import ContainerSpec, VolumeMount

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")
# Workload ids come from the orchestrator (e.g. ``acme/shop/web``); they only travel
# in labels, so a slightly wider alphabet than names is fine.
WORKLOAD_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:/@-]{0,127}$")
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
LABEL_KEY_RE = re.compile(r"^[a-z0-9]([a-z0-9._/-]{0,126}[a-z0-9])?$")

# Docker's reference grammar (distribution/reference), restricted to sha256 digests.
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
# Like Docker's normalization: the first component is a registry only when it has a dot
# or a port or is "localhost"; otherwise it is part of the (lower-case) repository path.
_REGISTRY = rf"(?:localhost(?::[0-9]{{1,5}})?|{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})+" \
    rf"(?::[0-9]{{1,5}})?|{_DOMAIN_COMPONENT}:[0-9]{{1,5}})"
_NAME = rf"(?:{_REGISTRY}/)?{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*"
IMAGE_REF_RE = re.compile(
    rf"^(?P<name>{_NAME})(?::(?P<tag>[\w][\w.-]{{0,127}}))?(?:@(?P<digest>sha256:[0-9a-f]{{64}}))?$"
)
IMAGE_ID_RE = re.compile(r"^sha256:[0-9a-f]{64}$")

MAX_IMAGE_REF = 512
MAX_IMAGE_NAME = 255  # docker's own cap on the name part
MAX_COMMAND_ARGS = 256
MAX_COMMAND_BYTES = 64 * 1024
MAX_ENV_VARS = 256
MAX_ENV_BYTES = 32 * 1024
MAX_LABELS = 64
MAX_LABEL_VALUE = 1024
MAX_VOLUMES = 32
MAX_MOUNT_PATH = 1024
MIN_MEMORY = 4 * 1024 * 1024  # below this Docker (and most programs) cannot start at all
MAX_MEMORY = 1 << 50  # 1 PiB: a sanity cap where the node's own total is unknown
NETWORKS = frozenset({"none", "host"})
# Mounting over these would hand the workload (or hide from it) kernel interfaces.
FORBIDDEN_MOUNT_ROOTS = ("/proc", "/sys", "/dev")
RESERVED_LABEL_PREFIX = "capstan."
USER_RE = re.compile(r"^(\d{1,10})(?::(\d{1,10}))?$")
MAX_ID = (1 << 31) - 2  # below (uid_t)-1 and what tools reading a signed int accept
# "" is the engine's default profile; the others ship with Capstan (node/seccomp/).
SECCOMP_PROFILES = frozenset({"", "default", "strict"})
# Capabilities a pool may hand back (Linux names without CAP_). The ones that make a
# workload the node's equal (SYS_ADMIN, SYS_MODULE, SYS_PTRACE, DAC_READ_SEARCH...)
# are not on the list at all: no policy can grant them.
GRANTABLE_CAPABILITIES = frozenset({
    "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID", "SETPCAP",
    "NET_BIND_SERVICE", "NET_RAW", "SYS_CHROOT", "MKNOD", "AUDIT_WRITE", "SETFCAP",
    "NET_ADMIN", "IPC_LOCK", "SYS_NICE", "SYS_RESOURCE", "SYS_TIME",
})
MAX_CAP_ADD = 16


def _require_str(field: str, value: object) -> str:
    if not isinstance(value, str):
        raise InvalidArgument(field, f"must be a string, not {type(value).__name__}")
    return value


def _no_nul(field: str, value: str) -> None:
    if "\x00" in value:
        raise InvalidArgument(field, "must not contain NUL characters")


def validate_name(field: str, value: object) -> str:
    """A container or volume name: lower-case, 1-63 characters, ``^[a-z0-9][a-z0-9_.-]*$``."""
    name = _require_str(field, value)
    if not NAME_RE.fullmatch(name):
        raise InvalidArgument(
            field,
            f"{name[:80]!r} is not a valid name (1-63 characters of a-z 0-9 _ . -, "
            "starting with a letter or digit)",
        )
    return name


def validate_workload_id(field: str, value: object) -> str:
    wid = _require_str(field, value)
    if not WORKLOAD_ID_RE.fullmatch(wid):
        raise InvalidArgument(
            field, f"{wid[:80]!r} is not a valid workload id (1-128 of A-Z a-z 0-9 _ . : / @ -)"
        )
    return wid


def validate_image_ref(field: str, value: object, *, allow_id: bool = False) -> str:
    """An image reference ``[registry/]repo[:tag][@sha256:...]``; with ``allow_id`` also a
    bare image id ``sha256:<64 hex>`` (what ``docker load`` reports for untagged images)."""
    ref = _require_str(field, value)
    if not ref:
        raise InvalidArgument(field, "must not be empty")
    if len(ref) > MAX_IMAGE_REF:
        raise InvalidArgument(field, f"longer than {MAX_IMAGE_REF} characters")
    if allow_id and IMAGE_ID_RE.fullmatch(ref):
        return ref
    match = IMAGE_REF_RE.fullmatch(ref)
    if match is None:
        raise InvalidArgument(field, f"{ref[:80]!r} is not a valid image reference")
    if match.group("name") == "sha256" or re.fullmatch(r"[0-9a-f]{64}", match.group("name")):
        # Docker would read these as image ids, not names: one meaning per string.
        raise InvalidArgument(field, f"{ref[:80]!r} is ambiguous with an image id")
    if len(match.group("name")) > MAX_IMAGE_NAME:
        raise InvalidArgument(field, f"repository name longer than {MAX_IMAGE_NAME} characters")
    return ref


def validate_command(field: str, value: Iterable[object]) -> tuple[str, ...]:
    args = tuple(value)
    if len(args) > MAX_COMMAND_ARGS:
        raise InvalidArgument(field, f"more than {MAX_COMMAND_ARGS} arguments")
    checked: list[str] = []
    total = 0
    for i, arg in enumerate(args):
        text = _require_str(f"{field}[{i}]", arg)
        _no_nul(f"{field}[{i}]", text)
        total += len(text.encode("utf-8", "surrogatepass")) + 1
        if total > MAX_COMMAND_BYTES:
            raise InvalidArgument(field, f"longer than {MAX_COMMAND_BYTES} bytes in total")
        checked.append(text)
    return tuple(checked)


def validate_env(field: str, value: Iterable[tuple[object, object]]) -> None:
    pairs = tuple(value)
    if len(pairs) > MAX_ENV_VARS:
        raise InvalidArgument(field, f"more than {MAX_ENV_VARS} variables")
    seen: set[str] = set()
    total = 0
    for i, pair in enumerate(pairs):
        if not isinstance(pair, tuple) or len(pair) != 2:
            raise InvalidArgument(f"{field}[{i}]", "must be a (name, value) pair")
        name = _require_str(f"{field}[{i}].name", pair[0])
        val = _require_str(f"{field}[{i}].value", pair[1])
        if not ENV_NAME_RE.fullmatch(name):
            raise InvalidArgument(
                f"{field}[{i}].name", f"{name[:80]!r} is not a valid variable name"
            )
        if name in seen:
            raise InvalidArgument(f"{field}[{i}].name", f"{name!r} is set twice")
        seen.add(name)
        _no_nul(f"{field}[{i}].value", val)
        total += len(name) + len(val.encode("utf-8", "surrogatepass")) + 2
        if total > MAX_ENV_BYTES:
            raise InvalidArgument(field, f"larger than {MAX_ENV_BYTES} bytes in total")


def validate_cpu(field: str, value: object, *, max_cpus: float | None = None) -> float:
    """Cores as a float: finite, 0 (unlimited) up to the node's CPU count."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidArgument(field, "must be a number")
    cpu = float(value)
    if not math.isfinite(cpu):
        raise InvalidArgument(field, "must be a finite number")
    if cpu < 0:
        raise InvalidArgument(field, "must not be negative")
    if max_cpus is not None and cpu > max_cpus:
        raise InvalidArgument(field, f"{cpu:g} cores asked, the node has {max_cpus:g}")
    if 0 < cpu < 0.001:
        # Docker's nano_cpus granularity makes smaller limits meaningless (and refused).
        raise InvalidArgument(field, "must be 0 (unlimited) or at least 0.001 cores")
    return cpu


def validate_memory(field: str, value: object, *, max_memory: int | None = None) -> int:
    """Bytes as an int: 0 (unlimited) or at least 4 MiB, at most the node's memory."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidArgument(field, "must be an integer number of bytes")
    if value < 0:
        raise InvalidArgument(field, "must not be negative")
    if 0 < value < MIN_MEMORY:
        raise InvalidArgument(field, f"must be 0 (unlimited) or at least {MIN_MEMORY} bytes")
    cap = MAX_MEMORY if max_memory is None else max_memory
    if value > cap:
        raise InvalidArgument(field, f"{value} bytes asked, at most {cap} allowed")
    return value


def validate_mount_path(field: str, value: object) -> str:
    """An absolute, normalized path inside the workload, away from kernel filesystems."""
    path = _require_str(field, value)
    _no_nul(field, path)
    if not path.startswith("/"):
        raise InvalidArgument(field, f"{path[:80]!r} is not an absolute path")
    if len(path) > MAX_MOUNT_PATH:
        raise InvalidArgument(field, f"longer than {MAX_MOUNT_PATH} characters")
    if ".." in path.split("/"):
        raise InvalidArgument(field, f"{path[:80]!r} contains '..'")
    if posixpath.normpath(path) != path or path.startswith("//"):
        raise InvalidArgument(field, f"{path[:80]!r} is not normalized")
    if path == "/":
        raise InvalidArgument(field, "must not be the root directory")
    for root in FORBIDDEN_MOUNT_ROOTS:
        if path == root or path.startswith(root + "/"):
            raise InvalidArgument(field, f"must not be under {root}")
    if ":" in path or "," in path:
        # Docker's mount syntax splits on these; refuse rather than rely on quoting.
        raise InvalidArgument(field, "must not contain ':' or ','")
    return path


def validate_network(field: str, value: object) -> str:
    net = _require_str(field, value)
    if net not in NETWORKS:
        raise InvalidArgument(field, f"{net[:40]!r} is not allowed (one of: none, host)")
    return net


def validate_labels(field: str, value: Iterable[tuple[object, object]]) -> None:
    pairs = tuple(value)
    if len(pairs) > MAX_LABELS:
        raise InvalidArgument(field, f"more than {MAX_LABELS} labels")
    seen: set[str] = set()
    for i, pair in enumerate(pairs):
        if not isinstance(pair, tuple) or len(pair) != 2:
            raise InvalidArgument(f"{field}[{i}]", "must be a (key, value) pair")
        key = _require_str(f"{field}[{i}].key", pair[0])
        val = _require_str(f"{field}[{i}].value", pair[1])
        if not LABEL_KEY_RE.fullmatch(key):
            raise InvalidArgument(f"{field}[{i}].key", f"{key[:80]!r} is not a valid label key")
        if key.startswith(RESERVED_LABEL_PREFIX):
            # The node's own labels are what scopes containers to it; no overriding.
            raise InvalidArgument(
                f"{field}[{i}].key", f"the {RESERVED_LABEL_PREFIX!r} prefix is reserved"
            )
        if key in seen:
            raise InvalidArgument(f"{field}[{i}].key", f"{key!r} is set twice")
        seen.add(key)
        _no_nul(f"{field}[{i}].value", val)
        if len(val) > MAX_LABEL_VALUE:
            raise InvalidArgument(f"{field}[{i}].value", f"longer than {MAX_LABEL_VALUE}")


def validate_volumes(field: str, value: Iterable[object]) -> None:
    mounts = tuple(value)
    if len(mounts) > MAX_VOLUMES:
        raise InvalidArgument(field, f"more than {MAX_VOLUMES} volumes")
    targets: set[str] = set()
    for i, mount in enumerate(mounts):
        if not isinstance(mount, VolumeMount):
            raise InvalidArgument(f"{field}[{i}]", "must be a VolumeMount")
        validate_name(f"{field}[{i}].name", mount.name)
        path = validate_mount_path(f"{field}[{i}].path", mount.path)
        if path in targets:
            raise InvalidArgument(f"{field}[{i}].path", f"{path!r} is mounted twice")
        targets.add(path)
        if not isinstance(mount.read_only, bool):
            raise InvalidArgument(f"{field}[{i}].read_only", "must be a boolean")


def validate_user(field: str, value: object) -> tuple[int, int] | None:
    """``"UID"`` or ``"UID:GID"`` in numbers (an image's user names mean nothing to the
    process runtime); ``""`` = the tenant's own non-root uid. Returns ``(uid, gid)``."""
    text = _require_str(field, value)
    if text == "":
        return None
    match = USER_RE.fullmatch(text)
    if match is None:
        raise InvalidArgument(field, f"{text[:40]!r} is not UID or UID:GID (numbers)")
    uid = int(match.group(1))
    gid = int(match.group(2)) if match.group(2) is not None else uid
    if uid > MAX_ID or gid > MAX_ID:
        raise InvalidArgument(field, f"ids above {MAX_ID} are not allowed")
    return uid, gid


def validate_seccomp(field: str, value: object) -> str:
    name = _require_str(field, value)
    if name not in SECCOMP_PROFILES:
        raise InvalidArgument(
            field, f"{name[:40]!r} is not a profile (one of: default, strict)"
        )
    return name


def validate_cap_add(field: str, value: Iterable[object]) -> tuple[str, ...]:
    caps = tuple(value)
    if len(caps) > MAX_CAP_ADD:
        raise InvalidArgument(field, f"more than {MAX_CAP_ADD} capabilities")
    seen: set[str] = set()
    for i, cap in enumerate(caps):
        name = _require_str(f"{field}[{i}]", cap)
        if name not in GRANTABLE_CAPABILITIES:
            raise InvalidArgument(f"{field}[{i}]", f"{name[:40]!r} is not a grantable capability")
        if name in seen:
            raise InvalidArgument(f"{field}[{i}]", f"{name!r} is named twice")
        seen.add(name)
    return tuple(str(c) for c in caps)


def validate_spec(
    spec: ContainerSpec, *, max_cpus: float | None = None, max_memory: int | None = None
) -> None:
    """Check every field of a container spec; raise InvalidArgument naming the first bad one.

    ``max_cpus``/``max_memory`` are the node's capacity when the caller knows it.
    """
    if not isinstance(spec, ContainerSpec):
        raise InvalidArgument("spec", "must be a ContainerSpec")
    validate_name("name", spec.name)
    validate_workload_id("workload_id", spec.workload_id)
    validate_image_ref("image", spec.image)
    validate_command("command", spec.command)
    validate_env("env", spec.env)
    validate_cpu("cpu", spec.cpu, max_cpus=max_cpus)
    validate_memory("memory", spec.memory, max_memory=max_memory)
    validate_volumes("volumes", spec.volumes)
    validate_network("network", spec.network)
    validate_labels("labels", spec.labels)
    validate_user("user", spec.user)
    validate_seccomp("seccomp", spec.seccomp)
    validate_cap_add("cap_add", spec.cap_add)
    if not isinstance(spec.low_ports, bool):
        raise InvalidArgument("low_ports", "must be a boolean")
