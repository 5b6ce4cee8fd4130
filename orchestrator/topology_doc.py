"""docs/topology.md, generated from the schema: ``python -m orchestrator.topology_doc``.

Every field of the topology messages (protos/topology.proto) gets a row: its YAML key,
type (from the descriptor), default (what the loader fills in for a minimal file: it
loads one), example (from examples/reference.yaml, loaded the same way) and the
field's own comment in the .proto file. A test regenerates the page and compares, so
a field added to the schema shows up here -- and fails the test until the page is
regenerated and the reference example uses it.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from importlib.resources import files
from pathlib import Path
from typing import Any

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from orchestrator.topology import load_topology
from protos import topology_pb2 as pb

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "examples" / "reference.yaml"
# What the loader fills in: a file with only the required keys (each list with one
# item made of its required keys).
MINIMAL = """\
apiVersion: capstan/v1
kind: Application
name: minimal
services:
  s:
    image: local/busybox:1
    volumes: [{name: v, path: /v}]
    ports: [{port: 80}]
    secrets: [{name: k}]
"""
REQUIRED = frozenset({
    "Application.name", "Application.services", "Service.name", "Service.image",
    "Autoscale.min", "Autoscale.max", "Autoscale.target_cpu", "ServiceVolume.name",
    "ServiceVolume.path", "ServicePort.port", "ServiceSecret.name",
})
# Fields whose YAML form is not the plain field: said once, here.
NOTES = {
    "Application.services": "Written as a mapping SERVICE-NAME -> service.",
    "Service.name": "Written as the service's key in `services`.",
    "Service.image": "An image the nodes hold (pinned by digest at apply); no registry.",
    "Service.command": "The program and its arguments (default: the image's).",
    "Service.env": "Environment variables of every instance.",
    "Service.resources": "What each instance requests; the scheduler reserves it.",
    "Service.placement": "Where instances may go and how they are spread.",
    "Service.volumes": "Named volumes of the node, mounted into each instance.",
    "Service.restart": "What to do when an instance exits.",
    "Service.network": "`none`: a network namespace with loopback only (links and "
    "published ports reach in); `host`: the node's (a pool policy must allow it).",
    "Service.ports": "The ports the service listens on.",
    "Service.seccomp": "`strict` narrows the default profile further.",
    "Service.cap_add": "Capabilities given back (each allowed by the pool's policy).",
    "Resources.memory": "Units: `64Mi`, `1Gi`, `500M`.",
    "Placement.strategy": "`spread: node` is a shorthand for `strategy: spread`.",
    "Placement.pool": "Which node pools: the tenant's own, the shared one, or either.",
    "Autoscale.min": "Fewest instances.",
    "Autoscale.max": "Most instances.",
    "ServiceVolume.name": "The volume (created on the node on first use).",
    "ServiceVolume.read_only": "Mounted read-only.",
    "ServicePort.port": "The port number inside the instance.",
    "ServicePort.protocol": "Only TCP is published and linked.",
}
_SCALARS = {
    FieldDescriptor.TYPE_STRING: "string",
    FieldDescriptor.TYPE_BOOL: "boolean",
    FieldDescriptor.TYPE_INT32: "integer",
    FieldDescriptor.TYPE_INT64: "integer",
    FieldDescriptor.TYPE_DOUBLE: "number",
}


def yaml_key(field: Any) -> str:
    return str(field.json_name)  # the loader reads camelCase keys (targetCpu, readOnly)


def enum_spellings(field: Any) -> list[str]:
    """The YAML words of an enum field: value names without the type prefix, in lower
    case, ``_`` as ``-`` (RESTART_POLICY_ON_FAILURE -> on-failure)."""
    enum = field.enum_type
    prefix = re.sub(r"(?<!^)(?=[A-Z])", "_", enum.name).upper() + "_"
    return [
        v.name.removeprefix(prefix).lower().replace("_", "-")
        for v in enum.values
        if v.number != 0
    ]


def _is_map(field: Any) -> bool:
    return field.message_type is not None and field.message_type.GetOptions().map_entry


def type_of(field: Any) -> str:
    if _is_map(field):
        return "mapping string → string"
    if field.type == FieldDescriptor.TYPE_ENUM:
        base = " | ".join(f"`{w}`" for w in enum_spellings(field))
    elif field.type == FieldDescriptor.TYPE_MESSAGE:
        base = f"[{field.message_type.name}](#{field.message_type.name.lower()})"
    else:
        base = _SCALARS.get(field.type, "?")
    if field.is_repeated:
        return f"list of {base}"
    return base


def _value(field: Any, value: Any) -> str:
    """A value as it would be written in YAML."""
    if _is_map(field):
        return "{" + ", ".join(f"{k}: {v}" for k, v in sorted(dict(value).items())) + "}"
    if field.is_repeated:
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            return f"list of {len(value)}, see below"
        return "[" + ", ".join(str(v) for v in value) + "]"
    if field.type == FieldDescriptor.TYPE_ENUM:
        words = enum_spellings(field)
        return words[value - 1] if 0 < value <= len(words) else "(unset)"
    if field.type == FieldDescriptor.TYPE_BOOL:
        return "true" if value else "false"
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        return "see below"
    if field.full_name == "capstan.v1.Resources.memory" and value:
        for unit, size in (("Gi", 1 << 30), ("Mi", 1 << 20), ("Ki", 1 << 10)):
            if value % size == 0:
                return f"{value // size}{unit}"
    if isinstance(value, str):
        return value if value else '""'
    return f"{value:g}" if isinstance(value, float) else str(value)


def _set(message: Message, field: Any) -> bool:
    if field.is_repeated:
        return len(getattr(message, field.name)) > 0
    if field.has_presence:
        return message.HasField(field.name)
    return bool(getattr(message, field.name))


def _instances(message: Message, descriptor: Any) -> Iterator[Message]:
    """Every message of type ``descriptor`` inside ``message`` (itself included)."""
    if message.DESCRIPTOR is descriptor:
        yield message
    for field in message.DESCRIPTOR.fields:
        if field.type != FieldDescriptor.TYPE_MESSAGE or _is_map(field):
            continue
        values = getattr(message, field.name)
        items = values if field.is_repeated else (
            [values] if message.HasField(field.name) else []
        )
        for item in items:
            yield from _instances(item, descriptor)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def comments(proto: str) -> dict[str, str]:
    """``Message.field`` -> its comment in the .proto text (lines above, or trailing)."""
    out: dict[str, str] = {}
    message = ""
    pending: list[str] = []
    for raw in proto.splitlines():
        line = raw.strip()
        opened = re.match(r"message (\w+) \{", line)
        if opened:
            message, pending = opened.group(1), []
            continue
        if line.startswith("//"):
            pending.append(line[2:].strip())
            continue
        field = re.match(r"(?:repeated |optional )?[\w.<>, ]+ (\w+) = \d+;\s*(?://\s*(.*))?$", line)
        if field and message:
            text = " ".join([*pending, field.group(2) or ""]).strip()
            out[f"{message}.{field.group(1)}"] = text
        if line == "}":
            message = ""
        pending = []
    return out


def _descriptors() -> list[Any]:
    """The documented messages: these first, then any other reached from Service."""
    order: list[Any] = [pb.Application, pb.Service, pb.Resources, pb.Placement, pb.Autoscale,
                        pb.ServiceVolume, pb.ServicePort, pb.ServiceSecret]
    seen = {m.DESCRIPTOR.full_name for m in order}
    stack = [pb.Service.DESCRIPTOR]
    extra: list[Any] = []
    while stack:
        d = stack.pop()
        for f in d.fields:
            m = f.message_type
            if m is not None and not _is_map(f) and m.full_name not in seen:
                seen.add(m.full_name)
                extra.append(m)
                stack.append(m)
    return [m.DESCRIPTOR for m in order] + extra


def generate() -> str:
    proto = files("protos").joinpath("topology.proto").read_text(encoding="utf-8")
    notes = comments(proto)
    minimal = load_topology(MINIMAL, source="<minimal>")
    reference = load_topology(REFERENCE.read_text(encoding="utf-8"), source=str(REFERENCE))
    descriptors = _descriptors()
    lines = [
        "# The topology file",
        "",
        "<!-- Generated by `python -m orchestrator.topology_doc > docs/topology.md` from",
        "     protos/topology.proto and examples/reference.yaml; tests/orchestrator_core/",
        "     test_topology_doc.py fails when it is out of date. Do not edit by hand. -->",
        "",
        "One YAML file describes an application; the same file runs on every scale",
        "(`capstan run -f`, `capstan apply -f`). The schema is the protobuf message",
        "`capstan.v1.Application` (protos/topology.proto): the file is parsed and mapped onto",
        "it, and every default below is filled in by the loader, so what the orchestrator",
        "stores is fully explicit. A wrong file is refused before anything is sent, with",
        "the file, line and field of every problem.",
        "",
        "Keys are camelCase (`targetCpu`, `readOnly`, `maxUnavailable`); unknown keys are",
        "refused (with a suggestion). The envelope `apiVersion: capstan/v1` and",
        "`kind: Application` is required.",
        "",
        "*Default* is what a file that leaves the key out gets; *example* is taken from",
        "[examples/reference.yaml](../examples/reference.yaml), a file that uses every field.",
        "",
    ]
    for d in descriptors:
        lines += [f"## {d.name}", "", "| key | type | default | example | meaning |",
                  "|---|---|---|---|---|"]
        defaults = next(_instances(minimal, d), None)
        examples = list(_instances(reference, d))
        for field in d.fields:
            name = f"{d.name}.{field.name}"
            default = _value(field, getattr(defaults, field.name)) if defaults is not None else "—"
            if field.is_repeated or _is_map(field):
                default = "(none)"
            elif defaults is not None and not _set(defaults, field):
                default = "(none)" if field.type == FieldDescriptor.TYPE_MESSAGE else default
            if d.name == "Application" and field.name == "tenant":
                default = "the caller's tenant, else `default`"
            if d.name == "ServiceSecret" and field.name == "path":
                default = "/run/secrets/NAME"
            if name in REQUIRED:
                default = "**required**"
            used = [m for m in examples if _set(m, field)]
            example = _value(field, getattr(used[0], field.name)) if used else "—"
            meaning = " ".join(t for t in (notes.get(name, ""), NOTES.get(name, "")) if t)
            lines.append(
                f"| `{yaml_key(field)}` | {_cell(type_of(field))} | {_cell(default)} | "
                f"{_cell(example)} | {_cell(meaning) or '—'} |"
            )
        lines.append("")
    lines += ["## The reference file", "", "```yaml", REFERENCE.read_text().rstrip(), "```", ""]
    return "\n".join(lines)


def missing_examples() -> list[str]:
    """Fields the reference file does not use (each needs an example)."""
    reference = load_topology(REFERENCE.read_text(encoding="utf-8"), source=str(REFERENCE))
    out = []
    for d in _descriptors():
        examples = list(_instances(reference, d))
        for field in d.fields:
            if not any(_set(m, field) for m in examples):
                out.append(f"{d.name}.{field.name}")
    return out


if __name__ == "__main__":
    sys.stdout.write(generate())
