"""Orchestrator configuration."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

from pki.errors import ConfigError


@dataclass
class OrchestratorConfig:
    pki_dir: Path
    store: Path
    listen: str = "127.0.0.1:7300"
    join_listen: str = "127.0.0.1:7299"
    name: str = "orchestrator"
    heartbeat: float = 1.0  # seconds between node heartbeats
    grace: float = 3.0  # silence after which a node is declared dead
    token_ttl: float = 60.0  # lifetime of tokens the orchestrator mints for itself
    delegation_ttl: float = 10.0  # lifetime of node-to-node and user tokens
    reconcile_interval: float = 0.5
    # The replicated store: etcd client endpoints (HOST:PORT,...); "" keeps SQLite at
    # ``store``. With etcd several orchestrators run and one leads.
    etcd: str = ""
    etcd_namespace: str = "/capstan"
    etcd_tls: tuple[Path, Path, Path] | None = None  # CA, client certificate, key
    leader_ttl: float = 2.0  # seconds a silent leader keeps leadership
    takeover_grace: float = 10.0  # extra silence allowed to nodes after an election
    # This orchestrator among several: they share one identity (nodes obey one issuer
    # and check one server id) and are told apart by member name and address.
    member: str = ""
    node_cert_ttl: float | None = None  # node certificates; None: the PKI default (24 h)
    cert_ttl: float | None = None  # the orchestrator's own certificate; None: 24 h
    metrics_listen: str = "127.0.0.1:0"  # the Prometheus endpoint (loopback by default)

    def __post_init__(self) -> None:
        self.member = self.member or self.name
        self.pki_dir = Path(self.pki_dir)
        self.store = Path(self.store)
        for what in ("listen", "join_listen"):
            host, sep, port = getattr(self, what).rpartition(":")
            if not sep or not host or not port.isdigit():
                raise ConfigError(f"{what} must be HOST:PORT, got {getattr(self, what)!r}")
        if not 0 < self.heartbeat < self.grace:
            raise ConfigError("heartbeat must be positive and shorter than grace")

    @property
    def host(self) -> str:
        return self.listen.rpartition(":")[0]

    def server_sans(self) -> tuple[list[str], list[str]]:
        """DNS and IP SANs for the orchestrator's serving certificate."""
        dns, ips = ["localhost"], []
        for addr in {self.listen.rpartition(":")[0], self.join_listen.rpartition(":")[0]}:
            try:
                ips.append(str(ipaddress.ip_address(addr.strip("[]"))))
            except ValueError:
                dns.append(addr)
        return dns, ips


@dataclass
class LifecycleSettings:
    """Certificate and key lifecycle on a running orchestrator; read at each use, so a
    change applies from the next check."""

    node_cert_ttl: float | None = None  # None: the PKI's default for nodes (24 h)
    period: float = 0.5  # seconds between checks
    ack_timeout: float = 10.0  # how long a trust push waits for every connected node
    batch: int = 3  # nodes re-issued at a time during a CA rotation
    batch_timeout: float = 30.0
    token_lifetime: float = 60.0  # longest lifetime of a token this orchestrator mints
    # After a node renews, its previous certificate stays usable this long (calls in
    # flight, tokens bound to it: at most token_lifetime), then it is revoked.
    superseded_grace: float = 90.0
    retire_margin: float = 30.0  # clock skew allowance before an old token key is retired
