"""``capstan node ...`` commands."""

from __future__ import annotations

import signal
import socket
import sys
import threading
from pathlib import Path
from types import FrameType

import click

from node.config import RUNTIMES, NodeConfig
from protos.wire.logs import configure_logging
from protos.wire.metrics import MetricsEndpoint

_path = click.Path(path_type=Path)


@click.group("node")
def node_group() -> None:
    """Run and manage a node agent."""


@node_group.command("serve")
@click.option("--config", "config_file", type=_path, help="YAML config file; flags override it.")
@click.option("--listen", help="HOST:PORT to serve on (port 0 picks a free one).")
@click.option("--cert", type=_path, help="Node certificate chain (PEM).")
@click.option("--key", type=_path, help="Node private key (PEM).")
@click.option("--ca", type=_path, help="Cluster trust bundle (PEM).")
@click.option("--jwks", type=_path, help="Token verification keys (JWKS); re-read on change.")
@click.option(
    "--deny-list", type=_path, help="Revoked serials, one hex per line; re-read on change."
)
@click.option("--state-dir", type=_path, help="Where the agent keeps its state, volumes and audit.")
@click.option("--runtime", type=click.Choice(RUNTIMES), help="Container runtime (default auto).")
@click.option(
    "--issuer", "issuers", multiple=True, help="Orchestrator SPIFFE id whose tokens are obeyed."
)
@click.option("--label", "labels", multiple=True, help="Node label KEY=VALUE.")
@click.option(
    "--metrics-listen",
    default="127.0.0.1:0",
    show_default=True,
    metavar="HOST:PORT",
    help="The Prometheus endpoint (/metrics); loopback unless you say otherwise.",
)
@click.option(
    "--log-format",
    type=click.Choice(("text", "json")),
    default="text",
    show_default=True,
    help="json: one JSON object per log line.",
)
@click.option("-v", "--verbose", is_flag=True)
def serve(
    config_file: Path | None,
    listen: str | None,
    cert: Path | None,
    key: Path | None,
    ca: Path | None,
    jwks: Path | None,
    deny_list: Path | None,
    state_dir: Path | None,
    runtime: str | None,
    issuers: tuple[str, ...],
    labels: tuple[str, ...],
    metrics_listen: str,
    log_format: str,
    verbose: bool,
) -> None:
    """Serve NodeService over mTLS; obey only capability tokens."""
    from node.server import build_agent
    from pki.errors import ConfigError

    configure_logging(verbose=verbose, fmt=log_format)
    label_map: dict[str, str] = {}
    for item in labels:
        k, sep, v = item.partition("=")
        if not sep or not k:
            raise ConfigError(f"--label must be KEY=VALUE, got {item!r}")
        label_map[k] = v
    cfg = NodeConfig.load(
        config_file,
        listen=listen,
        cert=cert,
        key=key,
        ca=ca,
        jwks=jwks,
        deny_list=deny_list,
        state_dir=state_dir,
        runtime=runtime,
        issuers=list(issuers),
        labels=label_map,
    )
    agent = build_agent(cfg)
    endpoint = _serve_metrics(metrics_listen, cfg.cert)
    host = cfg.listen.rpartition(":")[0]
    click.echo(
        f"node {agent.node_id} listening on {host}:{agent.port} runtime={agent.runtime.name}"
    )
    click.echo(f"metrics on {endpoint.url}")
    sys.stdout.flush()
    done = threading.Event()

    def _stop(_sig: int, _frame: FrameType | None) -> None:
        done.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    done.wait()
    agent.stop()


def _serve_metrics(listen: str, cert: Path) -> MetricsEndpoint:
    """The node's Prometheus endpoint; its certificate's expiry read at each scrape
    (a renewal replaces the file)."""
    from cryptography import x509

    from node import metrics
    from protos.wire.metrics import serve_metrics

    def not_after() -> float:
        pem = Path(cert).read_bytes()
        return x509.load_pem_x509_certificate(pem).not_valid_after_utc.timestamp()

    metrics.watch_certificate(not_after)
    return serve_metrics(listen, metrics.REGISTRY)


def _labels(items: tuple[str, ...]) -> dict[str, str]:
    from pki.errors import ConfigError

    labels: dict[str, str] = {}
    for item in items:
        k, sep, v = item.partition("=")
        if not sep or not k:
            raise ConfigError(f"--label must be KEY=VALUE, got {item!r}")
        labels[k] = v
    return labels


@node_group.command("join")
@click.argument("address", required=False)
@click.option(
    "--token",
    envvar="CAPSTAN_JOIN_TOKEN",
    show_envvar=True,
    help="One-time join token (CJ1....); not needed once the state dir has joined.",
)
@click.option(
    "--ca",
    "ca_file",
    type=_path,
    help="Cluster CA file; one root in it must match the token's CA pin.",
)
@click.option("--name", default="", help="Requested node name (the token may bind another).")
@click.option("--listen", help="HOST:PORT to serve on [default 127.0.0.1:0, a free port].")
@click.option("--dns", "dns", multiple=True, help="DNS name for the node certificate.")
@click.option(
    "--ip",
    "ips",
    multiple=True,
    help="IP address for the node certificate [default: the --listen host].",
)
@click.option(
    "--state-dir",
    type=_path,
    default=Path("node-state"),
    show_default=True,
    help="Where the node keeps its key, certificate and state.",
)
@click.option("--runtime", type=click.Choice(RUNTIMES), help="Container runtime [default auto].")
@click.option("--label", "labels", multiple=True, help="Node label KEY=VALUE.")
@click.option(
    "--mode",
    type=click.Choice(("push", "pull")),
    help="push: the orchestrator calls the node; pull: the node watches its assignments "
    "and converges itself [default push; fixed at join].",
)
@click.option("--cpus", type=float, default=0.0, help="CPUs offered [default: this host's].")
@click.option(
    "--memory", type=int, default=0, help="Memory offered in bytes [default: this host's]."
)
@click.option(
    "--metrics-listen",
    default="127.0.0.1:0",
    show_default=True,
    metavar="HOST:PORT",
    help="The Prometheus endpoint (/metrics); loopback unless you say otherwise.",
)
@click.option(
    "--log-format",
    type=click.Choice(("text", "json")),
    default="text",
    show_default=True,
    help="json: one JSON object per log line.",
)
@click.option("-v", "--verbose", is_flag=True)
def join(
    address: str | None,
    token: str | None,
    ca_file: Path | None,
    name: str,
    listen: str | None,
    dns: tuple[str, ...],
    ips: tuple[str, ...],
    state_dir: Path,
    runtime: str | None,
    labels: tuple[str, ...],
    mode: str | None,
    cpus: float,
    memory: int,
    metrics_listen: str,
    log_format: str,
    verbose: bool,
) -> None:
    """Join the cluster at ADDRESS (its Join endpoint), then serve and report.

    A state directory that already holds a joined node restarts it: no token is
    needed or sent. A node joined with ``--mode pull`` converges to its own
    assignments itself.
    """
    from node.agent import run_joined_node
    from node.join import JoinOptions, ensure_joined
    from pki.errors import ConfigError

    configure_logging(verbose=verbose, fmt=log_format)
    options = JoinOptions(
        name=name,
        listen=listen or "127.0.0.1:0",
        dns=dns,
        ips=ips,
        labels=_labels(labels),
        runtime=runtime or "auto",
        mode=mode or "push",
        cpus=cpus,
        memory=memory,
    )
    joined, reused = ensure_joined(state_dir, address, token, ca_file, options)
    if reused and mode and mode != joined.mode:
        # The orchestrator recorded the mode at join and acts on it (push calls or not).
        raise ConfigError(
            f"this node joined in {joined.mode} mode, not {mode}; "
            "join again from an empty state directory to change it"
        )
    node = run_joined_node(joined.state_dir, runtime_kind=runtime, listen=listen)
    endpoint = _serve_metrics(metrics_listen, joined.files.cert)
    try:
        # Armed before the line below: a launcher may signal as soon as it reads it.
        stop = _StopSignals()
        runtime_name = node.agent.runtime.name
        click.echo(f"node {node.node_id} listening on {node.listening} runtime={runtime_name}")
        click.echo(f"metrics on {endpoint.url}")
        sys.stdout.flush()
        stop.wait()
    finally:
        node.stop()


class _StopSignals:
    """Waits for SIGTERM or SIGINT without taking a lock in the signal handler.

    A handler that sets a threading.Event can deadlock: it runs in the main thread,
    possibly while that thread holds the Event's own lock inside ``wait()``. Here the
    interpreter's C-level handler writes to a socket and the main thread reads it.
    """

    def __init__(self) -> None:
        self._read, self._write = socket.socketpair()
        self._write.setblocking(False)
        signal.set_wakeup_fd(self._write.fileno())
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._ignore)

    @staticmethod
    def _ignore(_sig: int, _frame: FrameType | None) -> None:
        """The wakeup byte does the work; a Python handler must exist for it to be sent."""

    def wait(self) -> None:
        self._read.recv(1)
