"""Rendering records for people (``table``, ``wide``) and for programs (``json``, ``yaml``).

Tables are plain columns separated by two spaces, headers in capitals, no colour:
what ``kubectl get`` prints, so ``awk``/``column`` habits carry over. ``json`` and
``yaml`` are the protobuf records themselves (proto field names), as a list.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import click
import yaml
from google.protobuf import json_format
from google.protobuf.message import Message

from protos import control_pb2 as cpb

FORMATS = ("table", "wide", "json", "yaml", "name")

_MiB = 1024 * 1024
_GiB = 1024 * _MiB


@dataclass(frozen=True)
class Column:
    header: str
    value: Callable[[Message], str]
    wide_only: bool = False


def to_dicts(records: Iterable[Message]) -> list[dict[str, object]]:
    return [
        json_format.MessageToDict(
            r, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
        )
        for r in records
    ]


class OutputFormat(click.ParamType):  # type: ignore[type-arg,unused-ignore]
    """``table|wide|json|yaml|name`` or ``jsonpath=TEMPLATE`` (kubectl's spelling)."""

    name = "format"

    def __init__(self, formats: Sequence[str] = FORMATS) -> None:
        self.formats = tuple(formats)

    def get_metavar(self, param: click.Parameter, ctx: click.Context | None = None) -> str:
        return "|".join(self.formats) + "|jsonpath=TEMPLATE"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        text = str(value)
        if text in self.formats:
            return text
        if text.startswith("jsonpath="):
            try:
                compile_template(text.removeprefix("jsonpath="))
            except ValueError as exc:
                self.fail(str(exc), param, ctx)
            return text
        self.fail(
            f"{text!r} is not one of {', '.join(self.formats)} or jsonpath=TEMPLATE", param, ctx
        )


def compile_template(template: str) -> list[tuple[str, Any]]:
    """``"{.items[*].name}"`` -> literal text and compiled expressions, in order.

    kubectl's template form: ``{EXPR}`` is a JSONPath expression (a leading ``.`` or
    ``$`` optional), everything else is printed as it is; ``{"\\n"}`` is a newline.
    """
    from jsonpath_ng.exceptions import JsonPathLexerError, JsonPathParserError
    from jsonpath_ng.ext.parser import parse

    parts: list[tuple[str, Any]] = []
    rest = template
    while rest:
        start = rest.find("{")
        if start < 0:
            parts.append(("text", rest))
            break
        if start:
            parts.append(("text", rest[:start]))
        end = rest.find("}", start)
        if end < 0:
            raise ValueError(f"jsonpath template {template!r}: unclosed '{{'")
        expr = rest[start + 1 : end].strip()
        rest = rest[end + 1 :]
        if len(expr) >= 2 and expr[0] == expr[-1] == '"':
            parts.append(("text", expr[1:-1].replace("\\n", "\n").replace("\\t", "\t")))
            continue
        path = "$" + expr if expr.startswith(".") else expr
        try:
            parts.append(("path", parse(path or "$")))
        except (JsonPathLexerError, JsonPathParserError, Exception) as exc:
            raise ValueError(f"jsonpath {expr!r}: {' '.join(str(exc).split())}") from None
    return parts


def jsonpath(document: object, template: str) -> str:
    """The template evaluated against ``document``; several matches are space-separated."""
    out = []
    for kind, part in compile_template(template):
        if kind == "text":
            out.append(part)
            continue
        values = [m.value for m in part.find(document)]
        out.append(
            " ".join(v if isinstance(v, str) else json.dumps(v, sort_keys=True) for v in values)
        )
    return "".join(out)


def render(
    records: Sequence[Message],
    columns: Sequence[Column],
    fmt: str,
    *,
    kind: str = "",
    names: Callable[[Message], str] | None = None,
    single: bool = False,
) -> str:
    """The records in ``fmt``; an empty table prints nothing but its header.

    ``name`` prints ``KIND/NAME`` lines; ``jsonpath=T`` evaluates T against
    ``{"items": [...]}``, or against the one record when ``single`` (``get TYPE NAME``).
    """
    if fmt == "name":
        label = names or (lambda r: str(getattr(r, "name", "")))
        return "\n".join(f"{kind}/{label(r)}" for r in records)
    if fmt.startswith("jsonpath="):
        dicts = to_dicts(records)
        document: object = dicts[0] if single and dicts else {"items": dicts}
        return jsonpath(document, fmt.removeprefix("jsonpath="))
    if fmt == "json":
        return json.dumps(to_dicts(records), indent=2, sort_keys=True)
    if fmt == "yaml":
        return yaml.safe_dump(to_dicts(records), sort_keys=True, default_flow_style=False).rstrip()
    chosen = [c for c in columns if fmt == "wide" or not c.wide_only]
    rows = [[c.header for c in chosen]]
    rows.extend([c.value(r) for c in chosen] for r in records)
    return table(rows)


def table(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
    return "\n".join(lines)


# -- value formatting -------------------------------------------------------------------


def age(ts: float, now: float | None = None) -> str:
    """``45s``, ``12m``, ``3h``, ``2d``; ``-`` for an unset timestamp."""
    if ts <= 0:
        return "-"
    seconds = max(0, int((time.time() if now is None else now) - ts))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def memory(n: int) -> str:
    if n <= 0:
        return "0"
    if n % _GiB == 0:
        return f"{n // _GiB}Gi"
    if n >= 10 * _GiB:
        return f"{n / _GiB:.1f}Gi"
    if n >= _MiB:
        return f"{n / _MiB:.0f}Mi"
    return f"{n // 1024}Ki"


def cores(x: float) -> str:
    return f"{x:g}"


# -- columns per record kind ------------------------------------------------------------


def app_columns(now: float | None = None) -> list[Column]:
    def f(r: Message) -> cpb.AppSummary:
        assert isinstance(r, cpb.AppSummary)  # noqa: S101 - a programming error, not input
        return r

    return [
        Column("TENANT", lambda r: f(r).tenant),
        Column("NAME", lambda r: f(r).name),
        Column("SERVICES", lambda r: str(f(r).services)),
        Column("READY", lambda r: f"{f(r).running}/{f(r).desired}"),
        Column("GENERATION", lambda r: str(f(r).generation)),
        Column("UPDATED", lambda r: age(f(r).updated_at, now)),
    ]


def instance(w: cpb.Workload) -> str:
    return f"{w.service}.{w.index}"


def created(w: cpb.Workload) -> float:
    """When the instance was first wanted; records from before that was kept: last change."""
    return w.created_at or w.updated_at


def shown_state(w: cpb.Workload) -> str:
    """The reported state, ``terminating`` while a removal is under way (kubectl's word)."""
    if w.desired == "removed" and w.state not in ("removed", "exited", "failed"):
        return "terminating"
    return w.state


def workload_columns(now: float | None = None) -> list[Column]:
    def f(r: Message) -> cpb.Workload:
        assert isinstance(r, cpb.Workload)  # noqa: S101
        return r

    return [
        Column("TENANT", lambda r: f(r).tenant),
        Column("APP", lambda r: f(r).app),
        Column("INSTANCE", lambda r: instance(f(r))),
        Column("NODE", lambda r: f(r).node or "-"),
        Column("DESIRED", lambda r: f(r).desired, wide_only=True),
        Column("STATE", lambda r: shown_state(f(r))),
        Column("RESTARTS", lambda r: str(f(r).restarts)),
        Column("AGE", lambda r: age(created(f(r)), now)),
        Column("IMAGE", lambda r: f(r).image, wide_only=True),
        Column("CONTAINER", lambda r: f(r).container or "-", wide_only=True),
        Column("ENDPOINTS", lambda r: ",".join(f(r).endpoints) or "-", wide_only=True),
        Column("MESSAGE", lambda r: _one_line(f(r).message) or "-", wide_only=True),
    ]


def node_schedule(n: cpb.NodeRecord) -> str:
    if n.draining:
        return "draining"
    return "cordoned" if n.cordoned else "schedulable"


def node_columns(now: float | None = None) -> list[Column]:
    def f(r: Message) -> cpb.NodeRecord:
        assert isinstance(r, cpb.NodeRecord)  # noqa: S101
        return r

    return [
        Column("NAME", lambda r: f(r).name),
        Column("STATE", lambda r: f(r).state),
        Column("SCHEDULING", lambda r: node_schedule(f(r))),
        Column("WORKLOADS", lambda r: str(f(r).workloads)),
        Column("CPU", lambda r: f"{cores(f(r).allocated_cpu)}/{cores(f(r).cpus)}"),
        Column("MEMORY", lambda r: f"{memory(f(r).allocated_memory)}/{memory(f(r).memory)}"),
        Column("ADDRESS", lambda r: f(r).address),
        Column("RUNTIME", lambda r: f(r).runtime or "-", wide_only=True),
        Column("ISOLATION", lambda r: isolation(f(r).isolation), wide_only=True),
        Column("POOL", lambda r: f(r).pool or "shared", wide_only=True),
        Column("HEARTBEAT", lambda r: age(f(r).last_heartbeat, now), wide_only=True),
        Column("ID", lambda r: f(r).id, wide_only=True),
    ]


def isolation(value: str) -> str:
    """What ``get nodes -o wide`` shows: sandbox, docker, or UNISOLATED."""
    return "UNISOLATED" if value == "none" else value or "-"


def _one_line(text: str, limit: int = 80) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 3] + "..."
