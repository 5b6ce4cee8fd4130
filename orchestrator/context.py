"""Contexts: which orchestrator the CLI talks to, and with which user certificate.

Like a kubeconfig, one YAML file (``$CAPSTAN_HOME/config.yaml``, ``~/.capstan`` by
default) names any number of contexts and the current one::

    current-context: local
    contexts:
      local:
        endpoint: 127.0.0.1:7300
        ca: local/admin/ca.crt          # relative paths: relative to this file
        cert: local/admin/admin.crt
        key: local/admin/admin.key

``endpoint`` may list several orchestrators of one cluster (high availability),
comma-separated: ``127.0.0.1:7300,127.0.0.1:7310,127.0.0.1:7320``; the CLI goes to
whichever leads.

Selecting a context: ``--context NAME``, else ``$CAPSTAN_CONTEXT``, else
``current-context``. Every problem is one ``ContextError`` naming the file.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from pki.errors import ConfigError
from pki.files import atomic_write

__all__ = [
    "CONFIG_FILE",
    "ENV_CONTEXT",
    "ENV_HOME",
    "Context",
    "ContextConfig",
    "ContextError",
    "capstan_home",
    "config_path",
    "parse_endpoint",
]

ENV_HOME = "CAPSTAN_HOME"
ENV_CONTEXT = "CAPSTAN_CONTEXT"
CONFIG_FILE = "config.yaml"
_CONTEXT_KEYS = ("endpoint", "ca", "cert", "key")
_MAX_CONFIG_BYTES = 1 << 20


class ContextError(ConfigError):
    """The context file is missing, unreadable or malformed, or names no such context."""


def capstan_home() -> Path:
    """Where the CLI keeps its config and the local cluster: ``$CAPSTAN_HOME`` or ``~/.capstan``."""
    value = os.environ.get(ENV_HOME)
    return Path(value) if value else Path.home() / ".capstan"


def config_path() -> Path:
    return capstan_home() / CONFIG_FILE


@dataclass(frozen=True)
class Context:
    """An orchestrator endpoint (HOST:PORT) and the PEM files of the user who calls it."""

    name: str
    endpoint: str
    ca: Path
    cert: Path
    key: Path

    @property
    def endpoints(self) -> tuple[str, ...]:
        """Every orchestrator endpoint of the context (one, or several for HA)."""
        return tuple(e.strip() for e in self.endpoint.split(",") if e.strip())

    def read_credentials(self) -> tuple[bytes, bytes, bytes]:
        """(ca, cert chain, key) bytes; a missing file is a ContextError naming it."""
        out: list[bytes] = []
        for what, path in (("ca", self.ca), ("cert", self.cert), ("key", self.key)):
            try:
                out.append(path.read_bytes())
            except OSError as exc:
                raise ContextError(
                    f"context {self.name!r}: {what} file {path} cannot be read: "
                    f"{exc.strerror or exc}"
                ) from None
        return out[0], out[1], out[2]


@dataclass
class ContextConfig:
    """The parsed context file. ``load`` then ``save`` keeps unknown contexts as they were."""

    path: Path
    contexts: dict[str, Context] = field(default_factory=dict)
    current: str | None = None

    @classmethod
    def load(cls, path: Path | None = None, *, missing_ok: bool = False) -> ContextConfig:
        path = config_path() if path is None else Path(path)
        try:
            with path.open("rb") as fh:
                raw = fh.read(_MAX_CONFIG_BYTES + 1)
        except FileNotFoundError:
            if missing_ok:
                return cls(path)
            raise ContextError(
                f"{path}: no context file (run `capstan up`, or write one: see docs/cli.md)"
            ) from None
        except OSError as exc:
            raise ContextError(f"{path}: cannot be read: {exc.strerror or exc}") from None
        if len(raw) > _MAX_CONFIG_BYTES:
            raise ContextError(f"{path}: larger than {_MAX_CONFIG_BYTES} bytes")
        try:
            data = yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
            raise ContextError(f"{where}: not valid YAML") from None
        return cls._parse(path, {} if data is None else data)

    @classmethod
    def _parse(cls, path: Path, data: object) -> ContextConfig:
        if not isinstance(data, Mapping):
            raise ContextError(f"{path}: must be a mapping")
        unknown = sorted(str(k) for k in data if k not in ("contexts", "current-context"))
        if unknown:
            raise ContextError(f"{path}: unknown key {unknown[0]!r}")
        raw_contexts = data.get("contexts") or {}
        if not isinstance(raw_contexts, Mapping):
            raise ContextError(f"{path}: contexts must be a mapping of name -> context")
        contexts: dict[str, Context] = {}
        for name, body in raw_contexts.items():
            contexts[str(name)] = _context(path, str(name), body)
        current = data.get("current-context")
        if current is not None and not isinstance(current, str):
            raise ContextError(f"{path}: current-context must be a string")
        return cls(path, contexts, current or None)

    def resolve(self, name: str | None = None) -> Context:
        """The context named, else ``$CAPSTAN_CONTEXT``, else the current one."""
        chosen = name or os.environ.get(ENV_CONTEXT) or self.current
        if not chosen:
            raise ContextError(
                f"{self.path}: no current context (use --context NAME or `capstan context use`)"
            )
        try:
            return self.contexts[chosen]
        except KeyError:
            known = ", ".join(sorted(self.contexts)) or "none"
            raise ContextError(f"{self.path}: no context {chosen!r} (known: {known})") from None

    def set(self, context: Context, *, select: bool = False) -> None:
        self.contexts[context.name] = context
        if select:
            self.current = context.name

    def use(self, name: str) -> Context:
        context = self.resolve(name)
        self.current = name
        return context

    def remove(self, name: str) -> None:
        self.contexts.pop(name, None)
        if self.current == name:
            self.current = None

    def to_dict(self) -> dict[str, object]:
        return {
            "current-context": self.current,
            "contexts": {
                c.name: {
                    "endpoint": c.endpoint,
                    "ca": str(c.ca),
                    "cert": str(c.cert),
                    "key": str(c.key),
                }
                for c in self.contexts.values()
            },
        }

    def save(self) -> None:
        text = yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=False)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            atomic_write(self.path, text.encode("utf-8"), mode=0o600)
        except OSError as exc:
            raise ContextError(f"{self.path}: cannot be written: {exc.strerror or exc}") from None


def parse_endpoint(value: str, where: str) -> tuple[str, int]:
    """``HOST:PORT`` -> (host, port); anything else is a ContextError naming ``where``."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ContextError(f"{where}: must be HOST:PORT, got {value!r}")
    return host, int(port)


def _context(path: Path, name: str, body: object) -> Context:
    where = f"{path}: contexts.{name}"
    if not isinstance(body, Mapping):
        raise ContextError(f"{where}: must be a mapping with {', '.join(_CONTEXT_KEYS)}")
    for key in body:
        if key not in _CONTEXT_KEYS:
            raise ContextError(f"{where}: unknown key {str(key)!r}")
    values: dict[str, str] = {}
    for key in _CONTEXT_KEYS:
        value = body.get(key)
        if not isinstance(value, str) or not value:
            raise ContextError(f"{where}.{key}: required (a non-empty string)")
        values[key] = value
    for endpoint in values["endpoint"].split(","):
        parse_endpoint(endpoint.strip(), f"{where}.endpoint")
    base = path.parent

    def file(key: str) -> Path:
        p = Path(values[key]).expanduser()
        return p if p.is_absolute() else base / p

    return Context(name, values["endpoint"], file("ca"), file("cert"), file("key"))
