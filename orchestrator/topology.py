"""Topology files: YAML (DESIGN §6) mapped onto the ``capstan.v1.Application`` message.

The protobuf message is the schema; this module is the only place YAML keys are
mapped onto it. Every problem names the field path and the line, and all problems
of a file are reported at once::

    app.yaml:7: services.web.replicas: must be >= 0, got -1

The loaded Application is fully explicit (every default filled in), so two files
that mean the same thing load to equal messages and equal ``spec_hash`` values.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from google.protobuf import json_format
from google.protobuf.message import Message
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from orchestrator._yaml_lines import MAX_DOCUMENT_BYTES, RefusedInput, compose, line_of, scalar
from orchestrator.errors import Problem, TopologyError
from orchestrator.quantities import (
    MAX_CONSTRAINTS,
    MAX_PORTS,
    MAX_REPLICAS,
    MAX_SERVICES,
    parse_cpu,
    parse_memory,
)
from protos import topology_pb2 as pb
from protos.wire import rules

__all__ = [
    "API_VERSION",
    "KIND",
    "canonical_json",
    "load_topology",
    "load_topology_file",
    "spec_hash",
    "template_hash",
]

API_VERSION = "capstan/v1"
KIND = "Application"

_APP_FIELDS = ("apiVersion", "kind", "name", "tenant", "services")
_SERVICE_FIELDS = (
    "image",
    "command",
    "env",
    "replicas",
    "resources",
    "placement",
    "autoscale",
    "volumes",
    "restart",
    "maxUnavailable",
    "links",
    "network",
    "ports",
    "user",
    "seccomp",
    "capAdd",
    "secrets",
)
_STRATEGIES = {"spread": pb.PLACEMENT_STRATEGY_SPREAD, "binpack": pb.PLACEMENT_STRATEGY_BINPACK}
_POOLS = {
    "any": pb.POOL_POLICY_ANY,
    "dedicated": pb.POOL_POLICY_DEDICATED,
    "shared": pb.POOL_POLICY_SHARED,
}
_RESTARTS = {
    "always": pb.RESTART_POLICY_ALWAYS,
    "on-failure": pb.RESTART_POLICY_ON_FAILURE,
    "never": pb.RESTART_POLICY_NEVER,
}
_NETWORKS = {"none": pb.NETWORK_MODE_NONE, "host": pb.NETWORK_MODE_HOST}
_PROTOCOLS = {"tcp": pb.PROTOCOL_TCP, "udp": pb.PROTOCOL_UDP}
_PLAIN_KEY_RE = re.compile(r"^[A-Za-z0-9_-]+$")

T = TypeVar("T")


def _join(path: str, key: str) -> str:
    part = key if _PLAIN_KEY_RE.fullmatch(key) else json.dumps(key)
    return f"{path}.{part}" if path else part


@dataclass
class _Reader:
    """Walks the node tree, collecting problems instead of stopping at the first."""

    problems: list[Problem] = field(default_factory=list)
    # A block mapping or list starts on the line after its key; problems about the
    # whole collection are reported at the key's line, where the reader looks.
    key_lines: dict[int, int] = field(default_factory=dict)

    def report(self, at: Node | int, path: str, message: str) -> None:
        if isinstance(at, int):
            line = at
        elif not isinstance(at, ScalarNode) and id(at) in self.key_lines:
            line = self.key_lines[id(at)]
        else:
            line = line_of(at)
        self.problems.append(Problem(path, line, message))

    def entries(self, node: Node, path: str) -> list[tuple[str, Node, Node]] | None:
        """A mapping's (key, key node, value node) with string keys, duplicates refused."""
        if not isinstance(node, MappingNode) or _kind(node) != "mapping":
            self.report(node, path, f"must be a mapping, got {_kind(node)}")
            return None
        seen: dict[str, int] = {}
        out: list[tuple[str, Node, Node]] = []
        for key_node, value_node in node.value:
            kind, key = scalar(key_node)
            if kind == "merge key (<<)":
                self.report(key_node, path, "merge keys (<<) are not allowed")
                continue
            if kind != "string" or not isinstance(key, str):
                self.report(key_node, path, f"keys must be strings, got {kind}")
                continue
            if key in seen:
                self.report(
                    key_node, _join(path, key), f"duplicate key (first at line {seen[key]})"
                )
                continue
            seen[key] = line_of(key_node)
            self.key_lines[id(value_node)] = line_of(key_node)
            out.append((key, key_node, value_node))
        return out

    def fields(
        self, node: Node, path: str, allowed: Sequence[str], required: Sequence[str] = ()
    ) -> dict[str, Node] | None:
        """A mapping with a fixed set of keys: unknown keys and missing required ones reported."""
        items = self.entries(node, path)
        if items is None:
            return None
        out: dict[str, Node] = {}
        for key, key_node, value_node in items:
            if key not in allowed:
                hint = difflib.get_close_matches(key, allowed, n=1)
                more = f" (did you mean {hint[0]}?)" if hint else f" (known: {', '.join(allowed)})"
                self.report(key_node, _join(path, key), f"unknown field{more}")
                continue
            out[key] = value_node
        for key in required:
            if key not in out:
                self.report(node, _join(path, key), "required")
        return out

    def _typed(self, node: Node, path: str, want: str, check: Callable[[object], bool]) -> object:
        kind, value = scalar(node)
        if not check(value) or kind not in (want, "integer" if want == "number" else want):
            self.report(node, path, f"must be {_ARTICLE[want]} {want}, got {kind}")
            return None
        return value

    def string(self, node: Node, path: str) -> str | None:
        value = self._typed(node, path, "string", lambda v: isinstance(v, str))
        if isinstance(value, str):
            problem = rules.check_no_nul(value)
            if problem:
                self.report(node, path, problem)
                return None
            return value
        return None

    def integer(self, node: Node, path: str, minimum: int, maximum: int) -> int | None:
        value = self._typed(
            node, path, "integer", lambda v: isinstance(v, int) and not isinstance(v, bool)
        )
        if not isinstance(value, int):
            return None
        if value < minimum:
            self.report(node, path, f"must be >= {minimum}, got {value}")
            return None
        if value > maximum:
            self.report(node, path, f"must be at most {maximum}, got {value}")
            return None
        return value

    def number(self, node: Node, path: str) -> float | None:
        value = self._typed(
            node, path, "number", lambda v: isinstance(v, int | float) and not isinstance(v, bool)
        )
        return float(value) if isinstance(value, int | float) else None

    def boolean(self, node: Node, path: str) -> bool | None:
        value = self._typed(node, path, "boolean", lambda v: isinstance(v, bool))
        return value if isinstance(value, bool) else None

    def choice(self, node: Node, path: str, choices: dict[str, T]) -> T | None:
        value = self.string(node, path)
        if value is None:
            return None
        if value not in choices:
            self.report(node, path, f"must be one of {', '.join(choices)}, got {value[:40]!r}")
            return None
        return choices[value]

    def items(self, node: Node, path: str) -> list[Node] | None:
        if not isinstance(node, SequenceNode) or _kind(node) != "list":
            self.report(node, path, f"must be a list, got {_kind(node)}")
            return None
        return list(node.value)

    def checked(self, node: Node, path: str, value: T | None, problem: str | None) -> T | None:
        if problem is not None:
            self.report(node, path, problem)
            return None
        return value


_ARTICLE = {"string": "a", "integer": "an", "number": "a", "boolean": "a"}


def _kind(node: Node) -> str:
    return scalar(node)[0]


@dataclass
class _Links:
    """A service's links with their nodes, checked once every service name is known."""

    service: str
    targets: list[tuple[str, Node]]
    spec: pb.Service
    node: Node  # the service's mapping (where problems about the whole service go)


def load_topology(text: str | bytes, *, source: str = "<input>") -> pb.Application:
    """Parse a topology file's content; raise TopologyError listing every problem."""
    try:
        root = compose(text)
    except RefusedInput as exc:
        raise TopologyError(source, [exc.problem]) from None
    reader = _Reader()
    app = _application(reader, root)
    if reader.problems or app is None:
        problems = sorted(reader.problems, key=lambda p: p.line or 0)
        raise TopologyError(source, problems or [Problem("", 1, "invalid topology")])
    return app


def load_topology_file(path: str | os.PathLike[str]) -> pb.Application:
    """Read and parse a topology file; unreadable files are TopologyErrors too."""
    source = str(path)
    try:
        with Path(path).open("rb") as fh:
            data = fh.read(MAX_DOCUMENT_BYTES + 1)
    except FileNotFoundError:
        raise TopologyError(source, [Problem("", None, "does not exist")]) from None
    except IsADirectoryError:
        raise TopologyError(source, [Problem("", None, "is a directory, not a file")]) from None
    except OSError as exc:
        raise TopologyError(
            source, [Problem("", None, f"cannot be read: {exc.strerror}")]
        ) from None
    return load_topology(data, source=source)


def _application(r: _Reader, root: Node) -> pb.Application | None:
    top = r.fields(root, "", _APP_FIELDS, required=("apiVersion", "kind", "name", "services"))
    if top is None:
        return None
    app = pb.Application()
    if "apiVersion" in top:
        version = r.string(top["apiVersion"], "apiVersion")
        if version is not None and version != API_VERSION:
            r.report(
                top["apiVersion"], "apiVersion", f"must be {API_VERSION}, got {version[:40]!r}"
            )
    if "kind" in top:
        kind = r.string(top["kind"], "kind")
        if kind is not None and kind != KIND:
            r.report(top["kind"], "kind", f"must be {KIND}, got {kind[:40]!r}")
    if "name" in top:
        app.name = _dns_label(r, top["name"], "name") or ""
    if "tenant" in top:
        app.tenant = _dns_label(r, top["tenant"], "tenant") or ""
    if "services" not in top:
        return app
    services = r.entries(top["services"], "services")
    if services is None:
        return app
    if not top["services"].value:
        r.report(top["services"], "services", "must name at least one service")
    if len(services) > MAX_SERVICES:
        r.report(top["services"], "services", f"more than {MAX_SERVICES} services")
    links: list[_Links] = []
    for name, key_node, value_node in services:
        path = _join("services", name)
        problem = rules.check_dns_label(name)
        if problem:
            r.report(key_node, path, problem)
        service, service_links = _service(r, value_node, path)
        service.name = name
        app.services.append(service)
        links.append(_Links(name, service_links, service, value_node))
    _check_links(r, links)
    _check_published(r, links)
    return app


def _dns_label(r: _Reader, node: Node, path: str) -> str | None:
    value = r.string(node, path)
    if value is None:
        return None
    return r.checked(node, path, value, rules.check_dns_label(value))


def _service(r: _Reader, node: Node, path: str) -> tuple[pb.Service, list[tuple[str, Node]]]:
    svc = pb.Service(
        restart=pb.RESTART_POLICY_ALWAYS,
        network=pb.NETWORK_MODE_NONE,
        max_unavailable=1,
        placement=pb.Placement(strategy=pb.PLACEMENT_STRATEGY_SPREAD, pool=pb.POOL_POLICY_ANY),
    )
    svc.resources.SetInParent()
    f = r.fields(node, path, _SERVICE_FIELDS, required=("image",))
    if f is None:
        return svc, []
    if "image" in f:
        image = r.string(f["image"], _join(path, "image"))
        if image is not None:
            svc.image = (
                r.checked(f["image"], _join(path, "image"), image, rules.check_image_ref(image))
                or ""
            )
    if "command" in f:
        svc.command.extend(_command(r, f["command"], _join(path, "command")))
    if "env" in f:
        svc.env.update(_env(r, f["env"], _join(path, "env")))
    if "resources" in f:
        _resources(r, f["resources"], _join(path, "resources"), svc.resources)
    if "placement" in f:
        _placement(r, f["placement"], _join(path, "placement"), svc.placement)
    if "restart" in f:
        svc.restart = r.choice(f["restart"], _join(path, "restart"), _RESTARTS) or svc.restart
    if "network" in f:
        svc.network = r.choice(f["network"], _join(path, "network"), _NETWORKS) or svc.network
    if "maxUnavailable" in f:
        value = r.integer(f["maxUnavailable"], _join(path, "maxUnavailable"), 1, MAX_REPLICAS)
        if value is not None:
            svc.max_unavailable = value
    if "volumes" in f:
        svc.volumes.extend(_volumes(r, f["volumes"], _join(path, "volumes")))
    if "ports" in f:
        svc.ports.extend(_ports(r, f["ports"], _join(path, "ports"), svc.network))
    _sandbox(r, f, path, svc)
    if "secrets" in f:
        svc.secrets.extend(_secrets(r, f["secrets"], _join(path, "secrets"), svc))
    _scale(r, f, path, svc)
    links: list[tuple[str, Node]] = []
    if "links" in f:
        for i, item in enumerate(r.items(f["links"], _join(path, "links")) or []):
            target = r.string(item, f"{_join(path, 'links')}[{i}]")
            if target is not None:
                links.append((target, item))
                svc.links.append(target)
    return svc, links


def _sandbox(r: _Reader, f: dict[str, Node], path: str, svc: pb.Service) -> None:
    """user, seccomp, capAdd (docs/sandbox.md); what a pool permits is checked at apply."""
    if "user" in f:
        user = r.string(f["user"], _join(path, "user"))
        if user is not None:
            svc.user = r.checked(f["user"], _join(path, "user"), user, rules.check_user(user)) or ""
    if "seccomp" in f:
        name = r.string(f["seccomp"], _join(path, "seccomp"))
        if name is not None:
            problem = rules.check_seccomp(name) if name != "" else "must not be empty"
            svc.seccomp = r.checked(f["seccomp"], _join(path, "seccomp"), name, problem) or ""
    if "capAdd" in f:
        seen: set[str] = set()
        items = r.items(f["capAdd"], _join(path, "capAdd")) or []
        if len(items) > rules.MAX_CAP_ADD:
            r.report(f["capAdd"], _join(path, "capAdd"), f"more than {rules.MAX_CAP_ADD}")
            return
        for i, item in enumerate(items):
            where = f"{_join(path, 'capAdd')}[{i}]"
            cap = r.string(item, where)
            if cap is None:
                continue
            if cap in seen:
                r.report(item, where, f"{cap!r} is named twice")
                continue
            seen.add(cap)
            if r.checked(item, where, cap, rules.check_capability(cap)) is not None:
                svc.cap_add.append(cap)


def _command(r: _Reader, node: Node, path: str) -> list[str]:
    if isinstance(node, ScalarNode) and scalar(node)[0] == "string":
        r.report(node, path, "must be a list of strings (a command is not split like a shell)")
        return []
    args: list[str] = []
    for i, item in enumerate(r.items(node, path) or []):
        arg = r.string(item, f"{path}[{i}]")
        if arg is not None:
            args.append(arg)
    r.checked(node, path, None, rules.check_command(args))
    return args


def _env(r: _Reader, node: Node, path: str) -> dict[str, str]:
    env: dict[str, str] = {}
    for name, key_node, value_node in r.entries(node, path) or []:
        sub = _join(path, name)
        problem = rules.check_env_name(name)
        if problem:
            r.report(key_node, sub, problem)
            continue
        value = r.string(value_node, sub)
        if value is not None:
            env[name] = value
    r.checked(node, path, None, rules.check_env_total(env.items()))
    return env


def _resources(r: _Reader, node: Node, path: str, out: pb.Resources) -> None:
    f = r.fields(node, path, ("cpu", "memory"))
    if f is None:
        return
    if "cpu" in f:
        cpu_path = _join(path, "cpu")
        value = r.number(f["cpu"], cpu_path)
        if value is not None:
            cpu, problem = parse_cpu(value)
            out.cpu = r.checked(f["cpu"], cpu_path, cpu, problem) or 0.0
    if "memory" in f:
        mem_path = _join(path, "memory")
        kind, raw = scalar(f["memory"])
        if isinstance(raw, bool) or not isinstance(raw, int | str):
            r.report(f["memory"], mem_path, f"must be an integer or a size like 64Mi, got {kind}")
            return
        memory, problem = parse_memory(raw)
        out.memory = r.checked(f["memory"], mem_path, memory, problem) or 0


def _placement(r: _Reader, node: Node, path: str, out: pb.Placement) -> None:
    f = r.fields(node, path, ("strategy", "spread", "constraints", "pool"))
    if f is None:
        return
    if "strategy" in f and "spread" in f:
        r.report(f["spread"], _join(path, "spread"), "give either strategy or spread, not both")
    elif "strategy" in f:
        out.strategy = r.choice(f["strategy"], _join(path, "strategy"), _STRATEGIES) or out.strategy
    elif "spread" in f:
        # DESIGN §6 shorthand: ``spread: node`` spreads instances over nodes. Only
        # nodes are a spreading domain today; zones etc. would be new values here.
        r.choice(f["spread"], _join(path, "spread"), {"node": True})
        out.strategy = pb.PLACEMENT_STRATEGY_SPREAD
    if "pool" in f:
        out.pool = r.choice(f["pool"], _join(path, "pool"), _POOLS) or out.pool
    if "constraints" in f:
        c_path = _join(path, "constraints")
        entries = r.entries(f["constraints"], c_path) or []
        if len(entries) > MAX_CONSTRAINTS:
            r.report(f["constraints"], c_path, f"more than {MAX_CONSTRAINTS} constraints")
        for key, key_node, value_node in entries:
            sub = _join(c_path, key)
            problem = rules.check_label_key(key)
            if problem:
                r.report(key_node, sub, problem)
                continue
            value = r.string(value_node, sub)
            if (
                value is not None
                and r.checked(value_node, sub, value, rules.check_label_value(value)) is not None
            ):
                out.constraints[key] = value


def _volumes(r: _Reader, node: Node, path: str) -> list[pb.ServiceVolume]:
    items = r.items(node, path) or []
    if len(items) > rules.MAX_VOLUMES:
        r.report(node, path, f"more than {rules.MAX_VOLUMES} volumes")
    out: list[pb.ServiceVolume] = []
    names: dict[str, int] = {}
    paths: dict[str, int] = {}
    for i, item in enumerate(items):
        sub = f"{path}[{i}]"
        f = r.fields(item, sub, ("name", "path", "readOnly"), required=("name", "path"))
        if f is None:
            continue
        vol = pb.ServiceVolume()
        if "name" in f:
            name = _dns_label(r, f["name"], _join(sub, "name"))
            if name is not None and name in names:
                r.report(
                    f["name"],
                    _join(sub, "name"),
                    f"{name!r} is used twice (first at line {names[name]})",
                )
            elif name is not None:
                names[name] = line_of(f["name"])
                vol.name = name
        if "path" in f:
            p_path = _join(sub, "path")
            mount = r.string(f["path"], p_path)
            if mount is not None:
                mount = r.checked(f["path"], p_path, mount, rules.check_mount_path(mount))
            if mount is not None and mount in paths:
                r.report(
                    f["path"], p_path, f"{mount!r} is mounted twice (first at line {paths[mount]})"
                )
            elif mount is not None:
                paths[mount] = line_of(f["path"])
                vol.path = mount
        if "readOnly" in f:
            vol.read_only = bool(r.boolean(f["readOnly"], _join(sub, "readOnly")))
        out.append(vol)
    return out


def _secrets(r: _Reader, node: Node, path: str, svc: pb.Service) -> list[pb.ServiceSecret]:
    """``secrets: [{name, path?, env?}]``: a file each, at a path of its own; an
    environment variable only where ``env`` asks for one."""
    out: list[pb.ServiceSecret] = []
    paths: dict[str, int] = {v.path: 0 for v in svc.volumes}
    envs: dict[str, int] = {}
    for i, item in enumerate(r.items(node, path) or []):
        sub = f"{path}[{i}]"
        f = r.fields(item, sub, ("name", "path", "env"), required=("name",))
        if f is None:
            continue
        secret = pb.ServiceSecret()
        if "name" in f:
            secret.name = _dns_label(r, f["name"], _join(sub, "name")) or ""
        where = f.get("path")
        mount = (
            r.string(where, _join(sub, "path"))
            if where is not None
            else f"/run/secrets/{secret.name}"
        )
        if mount is not None and secret.name:
            mount = r.checked(
                where if where is not None else item,
                _join(sub, "path"),
                mount,
                rules.check_mount_path(mount),
            )
        if mount is not None and mount in paths:
            first = f" (first at line {paths[mount]})" if paths[mount] else " (a volume's path)"
            r.report(
                where if where is not None else item,
                _join(sub, "path"),
                f"{mount!r} is used twice{first}",
            )
        elif mount is not None:
            paths[mount] = line_of(where if where is not None else item)
            secret.path = mount
        if "env" in f:
            env = r.string(f["env"], _join(sub, "env"))
            if env is not None:
                env = r.checked(f["env"], _join(sub, "env"), env, rules.check_env_name(env))
            if env is not None and (env in envs or env in svc.env):
                r.report(f["env"], _join(sub, "env"), f"{env!r} is set twice")
            elif env is not None:
                envs[env] = line_of(f["env"])
                secret.env = env
        out.append(secret)
    return out


def _ports(r: _Reader, node: Node, path: str, network: int) -> list[pb.ServicePort]:
    out: list[pb.ServicePort] = []
    seen: dict[tuple[int, int], int] = {}
    published: dict[int, int] = {}
    items = r.items(node, path) or []
    if len(items) > MAX_PORTS:
        r.report(node, path, f"more than {MAX_PORTS} ports")
    for i, item in enumerate(items):
        sub = f"{path}[{i}]"
        f = r.fields(item, sub, ("port", "protocol", "publish"), required=("port",))
        if f is None or "port" not in f:
            continue
        number = r.integer(f["port"], _join(sub, "port"), 1, 65535)
        protocol = pb.PROTOCOL_TCP
        if "protocol" in f:
            protocol = r.choice(f["protocol"], _join(sub, "protocol"), _PROTOCOLS) or protocol
        publish = 0
        if "publish" in f:
            p_path = _join(sub, "publish")
            publish = r.integer(f["publish"], p_path, 1, 65535) or 0
            if publish and protocol != pb.PROTOCOL_TCP:
                r.report(f["publish"], p_path, "only TCP ports can be published (UDP: not yet)")
                publish = 0
            elif publish and network == pb.NETWORK_MODE_HOST:
                r.report(
                    f["publish"], p_path, "not with network: host (the port is the host's already)"
                )
                publish = 0
            elif publish and publish in published:
                r.report(
                    f["publish"],
                    p_path,
                    f"port {publish} is published twice (first at line {published[publish]})",
                )
                publish = 0
            elif publish:
                published[publish] = line_of(f["publish"])
        if number is None:
            continue
        if (number, protocol) in seen:
            r.report(
                item, sub, f"port {number} is listed twice (first at line {seen[number, protocol]})"
            )
            continue
        seen[number, protocol] = line_of(item)
        out.append(pb.ServicePort(port=number, protocol=protocol, publish=publish))
    return out


def _scale(r: _Reader, f: dict[str, Node], path: str, svc: pb.Service) -> None:
    """replicas and autoscale, checked against each other."""
    replicas = None
    if "replicas" in f:
        replicas = r.integer(f["replicas"], _join(path, "replicas"), 0, MAX_REPLICAS)
    if "autoscale" not in f:
        svc.replicas = 1 if replicas is None else replicas
        return
    a_path = _join(path, "autoscale")
    a = r.fields(
        f["autoscale"], a_path, ("min", "max", "targetCpu"), required=("min", "max", "targetCpu")
    )
    if a is None:
        return
    low = r.integer(a["min"], _join(a_path, "min"), 1, MAX_REPLICAS) if "min" in a else None
    high = r.integer(a["max"], _join(a_path, "max"), 1, MAX_REPLICAS) if "max" in a else None
    target = r.number(a["targetCpu"], _join(a_path, "targetCpu")) if "targetCpu" in a else None
    if target is not None and not 0 < target <= 1:
        r.report(a["targetCpu"], _join(a_path, "targetCpu"), f"must be in (0, 1], got {target:g}")
        target = None
    if low is not None and high is not None and high < low:
        r.report(a["max"], _join(a_path, "max"), f"must be >= autoscale.min ({low}), got {high}")
        high = None
    if svc.resources.cpu <= 0 and "targetCpu" in a:
        r.report(f["autoscale"], a_path, "needs resources.cpu (targetCpu is a fraction of it)")
    if (
        replicas is not None
        and low is not None
        and high is not None
        and not low <= replicas <= high
    ):
        r.report(
            f["replicas"],
            _join(path, "replicas"),
            f"must be between autoscale.min ({low}) and autoscale.max ({high}), got {replicas}",
        )
    if low is None or high is None or target is None:
        return
    svc.autoscale.CopyFrom(pb.Autoscale(min=low, max=high, target_cpu=target))
    svc.replicas = low if replicas is None else replicas


def _check_links(r: _Reader, services: list[_Links]) -> None:
    known = {s.service: s.spec for s in services}
    graph: dict[str, list[str]] = {}
    for s in services:
        seen: set[str] = set()
        graph[s.service] = []
        for i, (target, node) in enumerate(s.targets):
            path = f"{_join(_join('services', s.service), 'links')}[{i}]"
            if target == s.service:
                r.report(node, path, "a service cannot link to itself")
            elif target not in known:
                r.report(
                    node,
                    path,
                    f"unknown service {target[:63]!r} (known: {', '.join(sorted(known))})",
                )
            elif target in seen:
                r.report(node, path, f"{target!r} is listed twice")
            else:
                seen.add(target)
                graph[s.service].append(target)
                _check_link_target(r, node, path, s.spec, target, known[target])
    cycle = _find_cycle(graph)
    if cycle:
        first = next(s for s in services if s.service == cycle[0])
        node = next(n for t, n in first.targets if t == cycle[1])
        r.report(
            node,
            _join(_join("services", cycle[0]), "links"),
            "links form a cycle: " + " -> ".join(cycle),
        )


def _check_link_target(
    r: _Reader, node: Node, path: str, source: pb.Service, name: str, target: pb.Service
) -> None:
    """A link is a route into the target's own network namespace, to its TCP ports."""
    if source.network == pb.NETWORK_MODE_HOST:
        r.report(
            node, path, "links need network: none (a host-network service has no own loopback)"
        )
    elif target.network == pb.NETWORK_MODE_HOST:
        r.report(
            node, path, f"{name!r} uses network: host; a linked service must use network: none"
        )
    elif not any(p.protocol == pb.PROTOCOL_TCP for p in target.ports):
        r.report(node, path, f"{name!r} declares no TCP ports (a link reaches a service's ports)")


def _check_published(r: _Reader, services: list[_Links]) -> None:
    """Two services publishing one port cannot share a node: refuse it where they must
    (the same non-empty placement constraints send both to the same nodes)."""
    first: dict[tuple[int, tuple[tuple[str, str], ...]], str] = {}
    for s in services:
        pinned = tuple(sorted(s.spec.placement.constraints.items()))
        if not pinned:
            continue
        for port in s.spec.ports:
            if not port.publish:
                continue
            other = first.setdefault((port.publish, pinned), s.service)
            if other != s.service:
                r.report(
                    s.node,
                    _join(_join("services", s.service), "ports"),
                    f"port {port.publish} is also published by {other!r} and both are "
                    "constrained to the same nodes",
                )


def _find_cycle(graph: dict[str, list[str]]) -> list[str] | None:
    """The first cycle found by a depth-first walk in file order, as a closed path."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    stack: list[str] = []

    def visit(name: str) -> list[str] | None:
        state[name] = 1
        stack.append(name)
        for nxt in graph.get(name, []):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[name] = 2
        return None

    for name in graph:
        if name not in state:
            found = visit(name)
            if found:
                return found
    return None


def canonical_json(message: Message) -> bytes:
    """A deterministic serialization: sorted keys, no whitespace, enum names, defaults omitted.

    Unlike ``SerializeToString(deterministic=True)`` this is stable across protobuf
    versions, so stored hashes stay comparable after an upgrade.
    """
    data = json_format.MessageToDict(message, preserving_proto_field_name=True)
    return json.dumps(
        data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def spec_hash(service: pb.Service) -> str:
    """``sha256:<hex>`` of the whole service spec: any change at all changes it."""
    return "sha256:" + hashlib.sha256(canonical_json(service)).hexdigest()


def template_hash(service: pb.Service) -> str:
    """Like ``spec_hash`` but blind to scaling (replicas, autoscale, maxUnavailable):
    equal template hashes mean running instances can stay, only their count changes."""
    template = pb.Service()
    template.CopyFrom(service)
    for name in ("replicas", "autoscale", "max_unavailable"):
        template.ClearField(name)
    return "sha256:" + hashlib.sha256(canonical_json(template)).hexdigest()
