"""Field rules for topology files.

Where a field ends up in a node request, the rule here is the node's own rule
(node/validation.py): a topology that loads must never produce a container spec a
node refuses. The orchestrator does not import ``node`` (neither side imports the
other), so the rules are restated here and a test checks both agree on a corpus.
Each check returns ``None`` when the value is fine, else the message to report.
"""

from __future__ import annotations

import math
import posixpath
import re

DNS_LABEL_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
LABEL_KEY_RE = re.compile(r"^[a-z0-9]([a-z0-9._/-]{0,126}[a-z0-9])?$")

# Docker's reference grammar (distribution/reference), restricted to sha256 digests;
# identical to node/validation.py. Like Docker's normalization, the first component is
# a registry only when it has a dot or a port or is "localhost"; otherwise it is part
# of the (lower-case) repository path.
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REGISTRY = (
    rf"(?:localhost(?::[0-9]{{1,5}})?|{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})+"
    rf"(?::[0-9]{{1,5}})?|{_DOMAIN_COMPONENT}:[0-9]{{1,5}})"
)
_NAME = rf"(?:{_REGISTRY}/)?{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*"
IMAGE_REF_RE = re.compile(
    rf"^(?P<name>{_NAME})(?::(?P<tag>[\w][\w.-]{{0,127}}))?(?:@(?P<digest>sha256:[0-9a-f]{{64}}))?$"
)

MAX_IMAGE_REF = 512
MAX_IMAGE_NAME = 255
MAX_COMMAND_ARGS = 256
MAX_COMMAND_BYTES = 64 * 1024
MAX_ENV_VARS = 256
MAX_ENV_BYTES = 32 * 1024
MAX_LABEL_VALUE = 1024
MAX_CONSTRAINTS = 64
MAX_VOLUMES = 32
MAX_MOUNT_PATH = 1024
MIN_MEMORY = 4 * 1024 * 1024  # the node refuses less: Docker cannot start a container below it
MAX_MEMORY = 1 << 50  # 1 PiB
MAX_CPU = 1024.0
MAX_REPLICAS = 10_000
MAX_SERVICES = 256
MAX_PORTS = 64
FORBIDDEN_MOUNT_ROOTS = ("/proc", "/sys", "/dev")

# Binary suffixes only where they are spelled Ki/Mi/Gi/Ti; K/M/G/T are decimal. No
# fractions and no lower-case "m" (which means milli elsewhere and would be a trap).
_MEMORY_RE = re.compile(r"^(0|[1-9][0-9]{0,17})(Ki|Mi|Gi|Ti|K|M|G|T)?$")
_MEMORY_UNITS = {
    None: 1,
    "K": 1000,
    "M": 1000**2,
    "G": 1000**3,
    "T": 1000**4,
    "Ki": 1 << 10,
    "Mi": 1 << 20,
    "Gi": 1 << 30,
    "Ti": 1 << 40,
}


def _utf8_len(text: str) -> int:
    return len(text.encode("utf-8", "surrogatepass"))


def check_dns_label(value: str) -> str | None:
    if DNS_LABEL_RE.fullmatch(value):
        return None
    return (
        f"{value[:80]!r} is not a valid name (1-63 characters of a-z 0-9 -, "
        "starting and ending with a letter or digit)"
    )


def check_image_ref(value: str) -> str | None:
    if not value:
        return "must not be empty"
    if len(value) > MAX_IMAGE_REF:
        return f"longer than {MAX_IMAGE_REF} characters"
    match = IMAGE_REF_RE.fullmatch(value)
    if match is None:
        return f"{value[:80]!r} is not a valid image reference ([registry/]repo[:tag][@sha256:...])"
    if len(match.group("name")) > MAX_IMAGE_NAME:
        return f"repository name longer than {MAX_IMAGE_NAME} characters"
    return None


def check_command(args: list[str]) -> str | None:
    if len(args) > MAX_COMMAND_ARGS:
        return f"more than {MAX_COMMAND_ARGS} arguments"
    if sum(_utf8_len(a) + 1 for a in args) > MAX_COMMAND_BYTES:
        return f"longer than {MAX_COMMAND_BYTES} bytes in total"
    return None


def check_no_nul(value: str) -> str | None:
    return "must not contain NUL characters" if "\x00" in value else None


def check_env_name(name: str) -> str | None:
    if ENV_NAME_RE.fullmatch(name):
        return None
    return f"{name[:80]!r} is not a valid variable name ([A-Za-z_][A-Za-z0-9_]*)"


def check_env_total(env: dict[str, str]) -> str | None:
    if len(env) > MAX_ENV_VARS:
        return f"more than {MAX_ENV_VARS} variables"
    if sum(len(k) + _utf8_len(v) + 2 for k, v in env.items()) > MAX_ENV_BYTES:
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
    """Absolute, normalized, away from kernel filesystems; the node's exact rule."""
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
        return "must not contain ':' or ','"
    return None


def parse_cpu(value: float) -> tuple[float | None, str | None]:
    """Cores: finite, > 0, at most MAX_CPU, in steps of 0.001 (the runtime's granularity)."""
    if not math.isfinite(value):
        return None, "must be a finite number"
    if value <= 0:
        return None, f"must be > 0, got {value:g} (omit resources.cpu to request none)"
    if value > MAX_CPU:
        return None, f"must be at most {MAX_CPU:g} cores, got {value:g}"
    millis = round(value * 1000)
    if millis == 0 or abs(value * 1000 - millis) > 1e-6:
        return None, f"must be a multiple of 0.001 cores, got {value!r}"
    return millis / 1000, None


def parse_memory(value: int | str) -> tuple[int | None, str | None]:
    """Bytes from an int or ``<digits>[Ki|Mi|Gi|Ti|K|M|G|T]``; at least MIN_MEMORY."""
    if isinstance(value, str):
        match = _MEMORY_RE.fullmatch(value)
        if match is None:
            return None, (
                f"{value[:40]!r} is not a memory size (an integer number of bytes, "
                "or an integer with one of Ki Mi Gi Ti K M G T, e.g. 64Mi)"
            )
        number = int(match.group(1)) * _MEMORY_UNITS[match.group(2)]
    else:
        number = value
    if number <= 0:
        return None, "must be > 0 (omit resources.memory to request none)"
    if number < MIN_MEMORY:
        return None, f"must be at least 4Mi ({MIN_MEMORY} bytes), got {number}"
    if number > MAX_MEMORY:
        return None, f"must be at most 1Pi ({MAX_MEMORY} bytes), got {number}"
    return number, None
