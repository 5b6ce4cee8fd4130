"""The input rules a node applies to what it is asked to run, in one place.

The node enforces them on every request (``node.validation`` raises them as
``InvalidArgument`` naming the exact field); the orchestrator applies the same
functions when it loads a topology, so a topology that loads never becomes a request
a node refuses. Each check returns ``None`` when the value is fine, else the message
to report. The rules are deliberately narrower than what Docker accepts: names and
paths end up in container names, labels, bind mounts and file paths on the host.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterable

#: Container and volume names on a node.
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")
#: Names the orchestrator gives (tenant, application, service, volume): DNS labels,
#: a subset of NAME_RE, so every one is also a valid name on a node.
DNS_LABEL_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
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
_REGISTRY = (
    rf"(?:localhost(?::[0-9]{{1,5}})?|{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})+"
    rf"(?::[0-9]{{1,5}})?|{_DOMAIN_COMPONENT}:[0-9]{{1,5}})"
)
_NAME = rf"(?:{_REGISTRY}/)?{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*"
IMAGE_REF_RE = re.compile(
    rf"^(?P<name>{_NAME})(?::(?P<tag>[\w][\w.-]{{0,127}}))?(?:@(?P<digest>sha256:[0-9a-f]{{64}}))?$"
)
IMAGE_ID_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
_HEX64_RE = re.compile(r"[0-9a-f]{64}")

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
MIN_CPU = 0.001  # Docker's nano_cpus granularity makes smaller limits meaningless
NETWORKS = frozenset({"none", "host"})
# Mounting over these would hand the workload (or hide from it) kernel interfaces.
FORBIDDEN_MOUNT_ROOTS = ("/proc", "/sys", "/dev")
RESERVED_LABEL_PREFIX = "capstan."
USER_RE = re.compile(r"^(\d{1,10})(?::(\d{1,10}))?$")
MAX_ID = (1 << 31) - 2  # below (uid_t)-1 and what tools reading a signed int accept
# "" is the engine's default profile named explicitly; "strict" ships with Capstan.
SECCOMP_PROFILES = ("", "default", "strict")
# Capabilities a pool may hand back (Linux names without CAP_). The ones that make a
# workload the node's equal (SYS_ADMIN, SYS_MODULE, SYS_PTRACE, DAC_READ_SEARCH...)
# are not on the list: no policy can grant them.
GRANTABLE_CAPABILITIES = frozenset({
    "AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "IPC_LOCK", "KILL", "MKNOD",
    "NET_ADMIN", "NET_BIND_SERVICE", "NET_RAW", "SETFCAP", "SETGID", "SETPCAP", "SETUID",
    "SYS_CHROOT", "SYS_NICE", "SYS_RESOURCE", "SYS_TIME",
})
MAX_CAP_ADD = 16
LOW_PORT = 1024  # ports below this are privileged


def utf8_len(text: str) -> int:
    return len(text.encode("utf-8", "surrogatepass"))


def check_no_nul(value: str) -> str | None:
    return "must not contain NUL characters" if "\x00" in value else None


def check_name(value: str) -> str | None:
    """A container or volume name on a node."""
    if NAME_RE.fullmatch(value):
        return None
    return (
        f"{value[:80]!r} is not a valid name (1-63 characters of a-z 0-9 _ . -, "
        "starting with a letter or digit)"
    )


def check_dns_label(value: str) -> str | None:
    if DNS_LABEL_RE.fullmatch(value):
        return None
    return (
        f"{value[:80]!r} is not a valid name (1-63 characters of a-z 0-9 -, "
        "starting and ending with a letter or digit)"
    )


def check_workload_id(value: str) -> str | None:
    if WORKLOAD_ID_RE.fullmatch(value):
        return None
    return f"{value[:80]!r} is not a valid workload id (1-128 of A-Z a-z 0-9 _ . : / @ -)"


def check_image_ref(value: str, *, allow_id: bool = False) -> str | None:
    """``[registry/]repo[:tag][@sha256:...]``; with ``allow_id`` also a bare image id
    ``sha256:<64 hex>`` (what ``docker load`` reports for untagged images)."""
    if not value:
        return "must not be empty"
    if len(value) > MAX_IMAGE_REF:
        return f"longer than {MAX_IMAGE_REF} characters"
    if allow_id and IMAGE_ID_RE.fullmatch(value):
        return None
    match = IMAGE_REF_RE.fullmatch(value)
    if match is None:
        return f"{value[:80]!r} is not a valid image reference ([registry/]repo[:tag][@sha256:...])"
    name = match.group("name")
    if name == "sha256" or _HEX64_RE.fullmatch(name):
        # Docker would read these as image ids, not names: one meaning per string.
        return f"{value[:80]!r} is ambiguous with an image id"
    if len(name) > MAX_IMAGE_NAME:
        return f"repository name longer than {MAX_IMAGE_NAME} characters"
    return None


def check_command(args: Iterable[str]) -> str | None:
    """Count and total size of a command line (each argument is checked for NUL apart)."""
    args = list(args)
    if len(args) > MAX_COMMAND_ARGS:
        return f"more than {MAX_COMMAND_ARGS} arguments"
    if sum(utf8_len(a) + 1 for a in args) > MAX_COMMAND_BYTES:
        return f"longer than {MAX_COMMAND_BYTES} bytes in total"
    return None


def check_env_name(name: str) -> str | None:
    if ENV_NAME_RE.fullmatch(name):
        return None
    return f"{name[:80]!r} is not a valid variable name ([A-Za-z_][A-Za-z0-9_]*)"


def check_env_total(env: Iterable[tuple[str, str]]) -> str | None:
    """Count and total size of an environment (names and values checked apart)."""
    pairs = list(env)
    if len(pairs) > MAX_ENV_VARS:
        return f"more than {MAX_ENV_VARS} variables"
    if sum(len(k) + utf8_len(v) + 2 for k, v in pairs) > MAX_ENV_BYTES:
        return f"larger than {MAX_ENV_BYTES} bytes in total"
    return None


def check_label_key(key: str) -> str | None:
    if LABEL_KEY_RE.fullmatch(key):
        return None
    return f"{key[:80]!r} is not a valid label key"


def check_label_value(value: str) -> str | None:
    if len(value) > MAX_LABEL_VALUE:
        return f"longer than {MAX_LABEL_VALUE} characters"
    return check_no_nul(value)


def check_mount_path(path: str) -> str | None:
    """Absolute, normalized, away from kernel filesystems and Docker's mount syntax."""
    if "\x00" in path:
        return "must not contain NUL characters"
    if not path.startswith("/"):
        return f"{path[:80]!r} is not an absolute path"
    if len(path) > MAX_MOUNT_PATH:
        return f"longer than {MAX_MOUNT_PATH} characters"
    if ".." in path.split("/"):
        return f"{path[:80]!r} contains '..'"
    if posixpath.normpath(path) != path or path.startswith("//"):
        return f"{path[:80]!r} is not normalized (write {posixpath.normpath(path)!r})"
    if path == "/":
        return "must not be the root directory"
    for root in FORBIDDEN_MOUNT_ROOTS:
        if path == root or path.startswith(root + "/"):
            return f"must not be under {root}"
    if ":" in path or "," in path:
        # Docker's mount syntax splits on these; refuse rather than rely on quoting.
        return "must not contain ':' or ','"
    return None


def check_network(value: str) -> str | None:
    if value in NETWORKS:
        return None
    return f"{value[:40]!r} is not allowed (one of: none, host)"


def check_user(value: str) -> str | None:
    """``"UID"`` or ``"UID:GID"`` in numbers (an image's user names mean nothing to the
    process runtime, and a name could hide uid 0); ``""`` = the tenant's own uid."""
    if value == "":
        return None
    match = USER_RE.fullmatch(value)
    if match is None:
        return f"{value[:40]!r} is not UID or UID:GID (numbers)"
    if any(int(g) > MAX_ID for g in match.groups() if g is not None):
        return f"ids above {MAX_ID} are not allowed"
    return None


def parse_user(value: str) -> tuple[int, int] | None:
    """``(uid, gid)`` of a valid ``user`` value (the gid defaults to the uid)."""
    match = USER_RE.fullmatch(value)
    if match is None:
        return None
    uid = int(match.group(1))
    return uid, int(match.group(2)) if match.group(2) is not None else uid


def check_seccomp(value: str) -> str | None:
    if value not in SECCOMP_PROFILES:
        return f"{value[:40]!r} is not a profile (one of: default, strict)"
    return None


def check_capability(value: str) -> str | None:
    if value not in GRANTABLE_CAPABILITIES:
        return f"{value[:40]!r} is not a capability a pool can grant"
    return None
