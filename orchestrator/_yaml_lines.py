"""YAML composed into nodes that remember their line, with the dangerous parts refused.

PyYAML's SafeLoader composes a node tree (every node carries its start mark) without
constructing Python objects. On top of it this refuses aliases and anchors (billion
laughs), deep nesting (the composer recurses), oversized input and more than one
document, and it types scalars strictly: a ``yes`` is a boolean, ``010`` is not an
integer, and custom tags are refused rather than constructed.
"""

from __future__ import annotations

import re
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from orchestrator.errors import Problem

MAX_DOCUMENT_BYTES = 1 << 20
MAX_DEPTH = 32

_TAG = "tag:yaml.org,2002:"
_DECIMAL_INT_RE = re.compile(r"^[-+]?(0|[1-9][0-9]*)$")
_TYPE_NAMES = {
    f"{_TAG}str": "string",
    f"{_TAG}int": "integer",
    f"{_TAG}float": "number",
    f"{_TAG}bool": "boolean",
    f"{_TAG}null": "null",
    f"{_TAG}timestamp": "timestamp",
    f"{_TAG}binary": "binary",
    f"{_TAG}map": "mapping",
    f"{_TAG}seq": "list",
    f"{_TAG}merge": "merge key (<<)",
}


class RefusedInput(Exception):
    """Internal: the document cannot be composed; carries the one problem found."""

    def __init__(self, problem: Problem) -> None:
        super().__init__(problem.message)
        self.problem = problem


class _Loader(yaml.SafeLoader):
    """SafeLoader that refuses aliases, anchors and nesting deeper than MAX_DEPTH."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        event: yaml.Event = self.peek_event()  # type: ignore[no-untyped-call]
        line = None if event.start_mark is None else event.start_mark.line + 1
        if isinstance(event, yaml.AliasEvent):
            raise RefusedInput(Problem("", line, "aliases (*name) are not allowed"))
        if getattr(event, "anchor", None) is not None:
            raise RefusedInput(Problem("", line, "anchors (&name) are not allowed"))
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise RefusedInput(Problem("", line, f"nested deeper than {MAX_DEPTH}"))
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _decode(data: str | bytes) -> str:
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    if len(raw) > MAX_DOCUMENT_BYTES:
        raise RefusedInput(
            Problem("", None, f"larger than {MAX_DOCUMENT_BYTES} bytes ({len(raw)} bytes)")
        )
    if isinstance(data, str):
        return data
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise RefusedInput(Problem("", line, "is not UTF-8 text")) from None


def compose(data: str | bytes) -> Node:
    """Compose exactly one YAML document into a node tree, or raise RefusedInput."""
    text = _decode(data)
    loader: _Loader | None = None
    try:
        loader = _Loader(text)  # the reader checks every character here already
        node = loader.get_single_node()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        if exc.context_mark is not None and "<stream end>" in (exc.problem or ""):
            # "expected ']' but got <stream end>": where the bracket opened is what helps.
            mark = exc.context_mark
        line = None if mark is None else mark.line + 1
        message = "; ".join(p for p in (exc.context, exc.problem) if p) or "invalid YAML"
        raise RefusedInput(Problem("", line, f"invalid YAML: {message}")) from None
    except yaml.reader.ReaderError as exc:
        line = text[: exc.position].count("\n") + 1
        char = chr(exc.character) if isinstance(exc.character, int) else exc.character
        raise RefusedInput(
            Problem("", line, f"character {char!r} is not allowed in YAML")
        ) from None
    except yaml.YAMLError as exc:
        raise RefusedInput(Problem("", None, f"invalid YAML: {exc}")) from None
    finally:
        if loader is not None:
            loader.dispose()
    if node is None:
        raise RefusedInput(Problem("", 1, "the document is empty"))
    return node


def line_of(node: Node) -> int:
    return int(node.start_mark.line) + 1


def line_of_path(data: str | bytes, path: str) -> int | None:
    """The line of the key a dotted path (``services.web.network``) names, or of its
    nearest ancestor present in the document; None when the document is unreadable."""
    try:
        node = compose(data)
    except RefusedInput:
        return None
    line: int | None = None
    for part in path.split("."):
        if not isinstance(node, MappingNode):
            break
        found = next(((k, v) for k, v in node.value if getattr(k, "value", None) == part), None)
        if found is None:
            break
        line = line_of(found[0])
        node = found[1]
    return line


def type_name(node: Node) -> str:
    """``string``, ``list``, ``mapping``...; anything with a custom tag is named by its tag."""
    name = _TYPE_NAMES.get(node.tag)
    if name is None:
        return f"value tagged {node.tag!r}"
    if isinstance(node, MappingNode):
        return "mapping" if name == "mapping" else f"value tagged {node.tag!r}"
    if isinstance(node, SequenceNode):
        return "list" if name == "list" else f"value tagged {node.tag!r}"
    return name


def scalar(node: Node) -> tuple[str, object]:
    """The scalar's type name and value, typed strictly; ("invalid ...", None) if unusable."""
    if not isinstance(node, ScalarNode):
        return type_name(node), None
    kind = type_name(node)
    text = str(node.value)
    if kind == "string":
        return kind, text
    if kind == "integer":
        if not _DECIMAL_INT_RE.fullmatch(text):
            return f"integer written as {text!r} (only plain decimal integers are accepted)", None
        return kind, int(text)
    if kind == "number":
        try:
            return kind, float(
                text.replace("_", "").lower().replace(".inf", "inf").replace(".nan", "nan")
            )
        except ValueError:
            return f"number written as {text!r}", None
    if kind == "boolean":
        if text.lower() in ("true", "false"):
            return kind, text.lower() == "true"
        return f"boolean written as {text!r} (write true or false, or quote a string)", None
    if kind == "null":
        return kind, None
    return kind, None
