"""``capstan orchestrator serve`` and ``capstan orchestrator join-token``."""

from __future__ import annotations

from pathlib import Path

import click

from orchestrator import quantities
from orchestrator._cli._common import (
    DURATION,
    OperatorCommand,
    OperatorGroup,
    connect,
    context_option,
    key_values,
)
from orchestrator._cli.pool import policy_of, policy_options


@click.group("orchestrator", cls=OperatorGroup)
def orchestrator_group() -> None:
    """Run the orchestrator; manage node admission."""


@orchestrator_group.command("serve", cls=OperatorCommand)
@click.option(
    "--pki-dir",
    required=True,
    type=click.Path(path_type=Path, file_okay=False),
    help="PKI directory (capstan pki init) the orchestrator signs with.",
)
@click.option(
    "--listen",
    default="127.0.0.1:7300",
    show_default=True,
    help="HOST:PORT of the ControlService and node gateway (mTLS).",
)
@click.option(
    "--join-listen",
    default="127.0.0.1:7299",
    show_default=True,
    help="HOST:PORT where nodes join with a join token.",
)
@click.option(
    "--store",
    type=click.Path(path_type=Path, dir_okay=False),
    help="SQLite store file (one orchestrator). Required unless --etcd is given.",
)
@click.option(
    "--etcd",
    default="",
    metavar="HOST:PORT,...",
    help="etcd client endpoints: the replicated store, for several orchestrators.",
)
@click.option(
    "--etcd-namespace",
    default="/capstan",
    show_default=True,
    help="Key prefix of this cluster in etcd.",
)
@click.option(
    "--etcd-ca",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    help="CA bundle etcd's server certificate must chain to (capstan pki etcd).",
)
@click.option(
    "--etcd-cert",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    help="Client certificate for etcd (mTLS).",
)
@click.option(
    "--etcd-key",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    help="Key of the etcd client certificate.",
)
@click.option(
    "--member",
    default="",
    help="This orchestrator's member name among several (default: --name).",
)
@click.option(
    "--leader-ttl",
    type=click.FloatRange(min=1.0, max=60.0),
    default=2.0,
    show_default=True,
    help="Seconds a silent leader keeps leadership (etcd).",
)
@click.option(
    "--name",
    default="orchestrator",
    show_default=True,
    help="Orchestrator name (its identity spiffe://<domain>/orchestrator/NAME).",
)
@click.option(
    "--heartbeat",
    type=float,
    default=1.0,
    show_default=True,
    help="Seconds between node heartbeats.",
)
@click.option(
    "--grace",
    type=float,
    default=3.0,
    show_default=True,
    help="Seconds of silence after which a node is declared dead.",
)
@click.option(
    "--node-cert-ttl",
    type=DURATION,
    default="24h",
    show_default=True,
    help="Lifetime of node certificates (renewed by the nodes at about 2/3 of it).",
)
@click.option(
    "--cert-ttl",
    type=DURATION,
    default="24h",
    show_default=True,
    help="Lifetime of the orchestrator's own certificate (renewed at about 2/3 of it).",
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
def serve_cmd(
    *,
    pki_dir: Path,
    listen: str,
    join_listen: str,
    store: Path | None,
    etcd: str,
    etcd_namespace: str,
    etcd_ca: Path | None,
    etcd_cert: Path | None,
    etcd_key: Path | None,
    member: str,
    leader_ttl: float,
    name: str,
    heartbeat: float,
    grace: float,
    node_cert_ttl: float,
    cert_ttl: float,
    metrics_listen: str,
    log_format: str,
    verbose: bool,
) -> None:
    """Serve the control API, the node gateway and the join endpoint until SIGTERM."""
    from orchestrator.config import OrchestratorConfig
    from orchestrator.server import run
    from protos.wire.logs import configure_logging

    configure_logging(verbose=verbose, fmt=log_format)
    if not etcd and store is None:
        raise click.UsageError("give --store FILE (SQLite) or --etcd ENDPOINTS")
    tls_files = (etcd_ca, etcd_cert, etcd_key)
    if any(tls_files) and not all(tls_files):
        raise click.UsageError("--etcd-ca, --etcd-cert and --etcd-key go together")
    run(
        OrchestratorConfig(
            pki_dir=pki_dir,
            store=store or Path("capstan.db"),
            etcd=etcd,
            etcd_namespace=etcd_namespace,
            etcd_tls=(etcd_ca, etcd_cert, etcd_key) if etcd_ca and etcd_cert and etcd_key else None,
            member=member,
            leader_ttl=leader_ttl,
            listen=listen,
            join_listen=join_listen,
            name=name,
            heartbeat=heartbeat,
            grace=grace,
            node_cert_ttl=node_cert_ttl,
            cert_ttl=cert_ttl,
            metrics_listen=metrics_listen,
        )
    )


@orchestrator_group.command("join-token", cls=OperatorCommand)
@click.option("--name", default="", help="Bind the token to this node name.")
@click.option("--ttl", type=DURATION, default="1h", show_default=True, help="Token lifetime.")
@click.option("--pool", default="", help="Tenant pool the node joins (default: shared).")
@click.option(
    "--label",
    "labels",
    multiple=True,
    metavar="KEY=VALUE",
    callback=key_values,
    help="Node label; repeatable.",
)
@click.option(
    "--cpus",
    type=click.FloatRange(min=0),
    default=0.0,
    help="Cores the node may offer at most (default: what it reports).",
)
@click.option(
    "--memory",
    default="0",
    metavar="SIZE",
    help="Memory the node may offer at most, e.g. 8Gi (default: what it reports).",
)
@policy_options
@context_option
def join_token_cmd(
    name: str,
    ttl: float,
    pool: str,
    labels: dict[str, str],
    cpus: float,
    memory: str,
    allow_host_network: bool,
    allow_root: bool,
    allow_caps: tuple[str, ...],
    allow_unisolated: bool,
    allow_low_ports: bool,
    context_name: str | None,
) -> None:
    """Create a one-time node join token (admin only); prints the token alone.

    The node's labels, pool and capacity cap are the ones given here: what the node
    says of itself at join is not believed. With an ``--allow-*`` flag the token also
    carries the node's own sandbox ceiling (else the node gets its pool's at join)."""
    size, problem = (0, None) if memory == "0" else quantities.parse_memory(memory)
    if size is None:
        raise click.BadParameter(problem or "invalid size", param_hint="--memory")
    with connect(context_name) as client:
        given = (allow_host_network, allow_root, allow_caps, allow_unisolated, allow_low_ports)
        reply = client.create_join_token(
            name=name, ttl=ttl, pool=pool, labels=labels, cpus=cpus, memory=size,
            policy=policy_of(*given) if any(given) else None,
        )
    click.echo(reply.token)
