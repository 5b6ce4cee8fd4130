"""Node agent configuration: a YAML file and/or flags; flags win."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from pki.errors import ConfigError

RUNTIMES = ("auto", "docker", "process")


@dataclass
class NodeConfig:
    listen: str = "127.0.0.1:0"
    cert: Path = Path("node.crt")
    key: Path = Path("node.key")
    ca: Path = Path("ca.crt")
    jwks: Path = Path("jwks.json")
    deny_list: Path | None = None
    state_dir: Path = Path("node-state")
    runtime: str = "auto"
    issuers: list[str] = field(default_factory=list)
    max_token_ttl: float = 300.0
    labels: dict[str, str] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path | None, **overrides: Any) -> NodeConfig:
        values: dict[str, Any] = {}
        if path is not None:
            import yaml  # here: an agent started with flags alone need not hold a YAML parser

            from pki.files import read_file

            try:
                data = yaml.safe_load(read_file(path, "node config"))
            except yaml.YAMLError as exc:
                raise ConfigError(f"node config {path}: not valid YAML: {exc}") from None
            if not isinstance(data, dict):
                raise ConfigError(f"node config {path}: must be a mapping")
            known = {f.name.replace("_", "-") for f in fields(cls)} | {f.name for f in fields(cls)}
            for key, value in data.items():
                if key not in known:
                    raise ConfigError(f"node config {path}: unknown key {key!r}")
                values[str(key).replace("-", "_")] = value
        values.update({k: v for k, v in overrides.items() if v not in (None, (), [], {})})
        cfg = cls(**values)
        cfg._normalize()
        return cfg

    def _normalize(self) -> None:
        for name in ("cert", "key", "ca", "jwks", "state_dir"):
            setattr(self, name, Path(getattr(self, name)))
        if self.deny_list is not None:
            self.deny_list = Path(self.deny_list)
        if self.runtime not in RUNTIMES:
            raise ConfigError(f"runtime must be one of {', '.join(RUNTIMES)}, got {self.runtime!r}")
        if not isinstance(self.issuers, list) or not all(isinstance(i, str) for i in self.issuers):
            raise ConfigError("issuers must be a list of SPIFFE ids")
        if not self.issuers:
            raise ConfigError("issuers: at least one orchestrator identity must be trusted")
        host, sep, port = self.listen.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ConfigError(f"listen must be HOST:PORT, got {self.listen!r}")
