"""Input rules for everything a caller can put into a node, used by both runtimes and
the gRPC layer. The rules themselves are the contract's (``protos.wire.rules``): the
orchestrator checks topologies with the same functions.

Each check raises ``InvalidArgument(field, message)`` with ``field`` naming the exact
request field (``env[3].name``, ``volumes[0].path``) so a caller can fix its input.
The rules are deliberately narrower than what Docker accepts: names and paths end up
in container names, labels, bind mounts and file paths on the host.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Iterable

from node.errors import InvalidArgument, NotOwned
from node.runtime.base import ContainerSpec, VolumeMount
from protos.wire import names, rules


def _check(field: str, problem: str | None) -> None:
    if problem is not None:
        raise InvalidArgument(field, problem)


def _require_str(field: str, value: object) -> str:
    if not isinstance(value, str):
        raise InvalidArgument(field, f"must be a string, not {type(value).__name__}")
    return value


def _no_nul(field: str, value: str) -> None:
    _check(field, rules.check_no_nul(value))


def validate_name(field: str, value: object) -> str:
    """A container or volume name: lower-case, 1-63 characters, ``^[a-z0-9][a-z0-9_.-]*$``."""
    name = _require_str(field, value)
    _check(field, rules.check_name(name))
    return name


def validate_workload_id(field: str, value: object) -> str:
    wid = _require_str(field, value)
    _check(field, rules.check_workload_id(wid))
    return wid


def validate_image_ref(field: str, value: object, *, allow_id: bool = False) -> str:
    """An image reference ``[registry/]repo[:tag][@sha256:...]``; with ``allow_id`` also a
    bare image id ``sha256:<64 hex>`` (what ``docker load`` reports for untagged images)."""
    ref = _require_str(field, value)
    _check(field, rules.check_image_ref(ref, allow_id=allow_id))
    return ref


def validate_command(field: str, value: Iterable[object]) -> tuple[str, ...]:
    args = tuple(value)
    if len(args) > rules.MAX_COMMAND_ARGS:
        raise InvalidArgument(field, f"more than {rules.MAX_COMMAND_ARGS} arguments")
    checked: list[str] = []
    for i, arg in enumerate(args):
        text = _require_str(f"{field}[{i}]", arg)
        _no_nul(f"{field}[{i}]", text)
        checked.append(text)
    _check(field, rules.check_command(checked))
    return tuple(checked)


def validate_env(field: str, value: Iterable[tuple[object, object]]) -> None:
    pairs = tuple(value)
    if len(pairs) > rules.MAX_ENV_VARS:
        raise InvalidArgument(field, f"more than {rules.MAX_ENV_VARS} variables")
    seen: set[str] = set()
    checked: list[tuple[str, str]] = []
    for i, pair in enumerate(pairs):
        if not isinstance(pair, tuple) or len(pair) != 2:
            raise InvalidArgument(f"{field}[{i}]", "must be a (name, value) pair")
        name = _require_str(f"{field}[{i}].name", pair[0])
        val = _require_str(f"{field}[{i}].value", pair[1])
        _check(f"{field}[{i}].name", rules.check_env_name(name))
        if name in seen:
            raise InvalidArgument(f"{field}[{i}].name", f"{name!r} is set twice")
        seen.add(name)
        _no_nul(f"{field}[{i}].value", val)
        checked.append((name, val))
    _check(field, rules.check_env_total(checked))


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
    if 0 < cpu < rules.MIN_CPU:
        # Docker's nano_cpus granularity makes smaller limits meaningless (and refused).
        raise InvalidArgument(field, f"must be 0 (unlimited) or at least {rules.MIN_CPU} cores")
    return cpu


def validate_memory(field: str, value: object, *, max_memory: int | None = None) -> int:
    """Bytes as an int: 0 (unlimited) or at least 4 MiB, at most the node's memory."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidArgument(field, "must be an integer number of bytes")
    if value < 0:
        raise InvalidArgument(field, "must not be negative")
    if 0 < value < rules.MIN_MEMORY:
        raise InvalidArgument(field, f"must be 0 (unlimited) or at least {rules.MIN_MEMORY} bytes")
    cap = rules.MAX_MEMORY if max_memory is None else max_memory
    if value > cap:
        raise InvalidArgument(field, f"{value} bytes asked, at most {cap} allowed")
    return value


def validate_mount_path(field: str, value: object) -> str:
    """An absolute, normalized path inside the workload, away from kernel filesystems."""
    path = _require_str(field, value)
    _check(field, rules.check_mount_path(path))
    return path


def validate_network(field: str, value: object) -> str:
    net = _require_str(field, value)
    _check(field, rules.check_network(net))
    return net


def validate_labels(field: str, value: Iterable[tuple[object, object]]) -> None:
    pairs = tuple(value)
    if len(pairs) > rules.MAX_LABELS:
        raise InvalidArgument(field, f"more than {rules.MAX_LABELS} labels")
    seen: set[str] = set()
    for i, pair in enumerate(pairs):
        if not isinstance(pair, tuple) or len(pair) != 2:
            raise InvalidArgument(f"{field}[{i}]", "must be a (key, value) pair")
        key = _require_str(f"{field}[{i}].key", pair[0])
        val = _require_str(f"{field}[{i}].value", pair[1])
        _check(f"{field}[{i}].key", rules.check_label_key(key))
        if key.startswith(rules.RESERVED_LABEL_PREFIX):
            # The node's own labels are what scopes containers to it; no overriding.
            raise InvalidArgument(
                f"{field}[{i}].key", f"the {rules.RESERVED_LABEL_PREFIX!r} prefix is reserved"
            )
        if key in seen:
            raise InvalidArgument(f"{field}[{i}].key", f"{key!r} is set twice")
        seen.add(key)
        _check(f"{field}[{i}].value", rules.check_label_value(val))


def validate_volumes(field: str, value: Iterable[object]) -> None:
    mounts = tuple(value)
    if len(mounts) > rules.MAX_VOLUMES:
        raise InvalidArgument(field, f"more than {rules.MAX_VOLUMES} volumes")
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
    """``"UID"`` or ``"UID:GID"`` in numbers; ``""`` = the tenant's own non-root uid.
    Returns ``(uid, gid)``, None for the default."""
    text = _require_str(field, value)
    _check(field, rules.check_user(text))
    return rules.parse_user(text)


def validate_seccomp(field: str, value: object) -> str:
    name = _require_str(field, value)
    _check(field, rules.check_seccomp(name))
    return name


def validate_cap_add(field: str, value: Iterable[object]) -> tuple[str, ...]:
    caps = tuple(value)
    if len(caps) > rules.MAX_CAP_ADD:
        raise InvalidArgument(field, f"more than {rules.MAX_CAP_ADD} capabilities")
    seen: set[str] = set()
    for i, cap in enumerate(caps):
        name = _require_str(f"{field}[{i}]", cap)
        _check(f"{field}[{i}]", rules.check_capability(name))
        if name in seen:
            raise InvalidArgument(f"{field}[{i}]", f"{name!r} is named twice")
        seen.add(name)
    return tuple(str(c) for c in caps)


def check_owner(spec: ContainerSpec) -> None:
    """Every volume a container mounts belongs to the container's own tenant and
    application: its name starts with the same ``<tenant>.<app>.`` (``protos.wire.names``).

    The container's name is the token's ``res``, so this ties what the spec touches on
    the node to what the orchestrator authorized (regression: two tenants'
    same-named applications shared a volume). The same holds for the service the
    container says it is an instance of (what link tunnels route to). Raises
    ``NotOwned``."""
    if spec.service:
        tenant, _, rest = spec.service.partition("/")
        app = rest.partition("/")[0]
        if names.owner_of(spec.name) != names.owner(tenant, app):
            raise NotOwned("service", f"{spec.service[:80]!r} is not the container's application")
    if not spec.volumes:
        return
    owner = names.owner_of(spec.name)
    if owner is None:
        raise NotOwned("name", "a container that mounts volumes is named <tenant>.<app>.<...>")
    for i, mount in enumerate(spec.volumes):
        if names.owner_of(mount.name) != owner:
            raise NotOwned(
                f"volumes[{i}].name",
                f"{mount.name[:80]!r} is not a volume of {owner!r}",
            )


SERVICE_REF_RE = re.compile(
    r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(/[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?){2}$"
)
MAX_LINKS = 64


def validate_port(field: str, value: object, *, allow_zero: bool = False) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidArgument(field, "must be an integer")
    if not (0 if allow_zero else 1) <= value <= 65535:
        raise InvalidArgument(field, f"must be a port number, got {value}")
    return value


def validate_service_ref(field: str, value: object) -> str:
    """tenant/app/service, three DNS labels."""
    text = _require_str(field, value)
    if not SERVICE_REF_RE.fullmatch(text):
        raise InvalidArgument(field, "must be tenant/app/service (three DNS labels)")
    return text


def validate_link_address(field: str, value: object) -> str:
    """A loopback address of the workload's own namespace, never 127.0.0.1 (its own)."""
    text = _require_str(field, value)
    try:
        address = ipaddress.IPv4Address(text)
    except ValueError:
        raise InvalidArgument(field, "must be an IPv4 address") from None
    if not address.is_loopback or str(address) != text or text == "127.0.0.1":
        raise InvalidArgument(field, "must be a loopback address other than 127.0.0.1")
    return text


def validate_net(spec: ContainerSpec) -> None:
    """The data-plane fields: service, declared ports, links."""
    if spec.service:
        validate_service_ref("service", spec.service)
    seen: set[int] = set()
    published: set[int] = set()
    for i, p in enumerate(spec.ports):
        validate_port(f"ports[{i}].port", p.port)
        validate_port(f"ports[{i}].publish", p.publish, allow_zero=True)
        if p.port in seen or (p.publish and p.publish in published):
            raise InvalidArgument(f"ports[{i}]", "listed twice")
        seen.add(p.port)
        if p.publish:
            published.add(p.publish)
    if len(spec.links) > MAX_LINKS:
        raise InvalidArgument("links", f"more than {MAX_LINKS}")
    if spec.links and (spec.network != "none" or not spec.service):
        raise InvalidArgument("links", "only for a service's instance with network none")
    addresses: set[str] = set()
    for i, link in enumerate(spec.links):
        label = link.service
        if not isinstance(label, str) or not re.fullmatch(
            r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?", label
        ):
            raise InvalidArgument(f"links[{i}].service", "must be a DNS label")
        validate_link_address(f"links[{i}].address", link.address)
        target = validate_service_ref(f"links[{i}].target", link.target)
        if target.rsplit("/", 1)[0] != spec.service.rsplit("/", 1)[0]:
            raise InvalidArgument(f"links[{i}].target", "must be a service of the same application")
        if link.address in addresses:
            raise InvalidArgument(f"links[{i}].address", "used twice")
        addresses.add(link.address)
        if not link.ports or len(link.ports) > MAX_LINKS:
            raise InvalidArgument(f"links[{i}].ports", f"must name 1 to {MAX_LINKS} ports")
        for j, port in enumerate(link.ports):
            validate_port(f"links[{i}].ports[{j}]", port)


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
    validate_net(spec)
    validate_user("user", spec.user)
    validate_seccomp("seccomp", spec.seccomp)
    validate_cap_add("cap_add", spec.cap_add)
    if not isinstance(spec.low_ports, bool):
        raise InvalidArgument("low_ports", "must be a boolean")
