"""``capstan up``, ``capstan down``, ``capstan status``: a cluster on this host."""

from __future__ import annotations

import json
from pathlib import Path

import click

from orchestrator._cli._common import DURATION, OperatorCommand
from orchestrator._cli._output import table
from orchestrator._cli._progress import progress_reporter
from orchestrator._cli.get import format_orchestrators
from orchestrator.client import ControlClient, ControlError
from orchestrator.local import DEFAULT_BASE_PORT, ClusterRecord, LocalCluster, LocalClusterError
from orchestrator.topology import load_topology

# The demo application is package data (an installed capstan has no examples/
# folder); examples/demo.yaml is the same file for readers of the repository.
DEMO_NAME = "demo.yaml"


def demo_text() -> str:
    """The demo topology file shipped inside the package."""
    from importlib.resources import files

    return files("orchestrator._cli").joinpath(DEMO_NAME).read_text(encoding="utf-8")


_dir_option = click.option(
    "--dir",
    "directory",
    type=click.Path(path_type=Path, file_okay=False),
    help="Cluster directory (default: $CAPSTAN_HOME/local).",
)


@click.command("up", cls=OperatorCommand)
@click.option("--nodes", type=click.IntRange(1, 250), default=3, show_default=True)
@_dir_option
@click.option(
    "--runtime", type=click.Choice(("auto", "docker", "process")), default="auto", show_default=True
)
@click.option("--demo", is_flag=True, help=f"Then apply the demo application ({DEMO_NAME}).")
@click.option(
    "--base-port",
    type=click.IntRange(1024, 65522),
    default=DEFAULT_BASE_PORT,
    show_default=True,
    help="Orchestrator on 127.0.0.1:PORT, joins on PORT+1, nodes on 127.0.0.N:PORT+2, "
    "metrics from PORT+13.",
)
@click.option(
    "--timeout",
    type=DURATION,
    default="120s",
    show_default=True,
    help="How long --demo waits for the application to run.",
)
@click.option(
    "--ha",
    is_flag=True,
    help="Three etcd members (client and peer mTLS) and three orchestrators, one leading; "
    "SQLite and one orchestrator without it.",
)
def up_cmd(
    *,
    nodes: int,
    directory: Path | None,
    runtime: str,
    demo: bool,
    base_port: int,
    timeout: float,
    ha: bool,
) -> None:
    """Start a local cluster: an orchestrator and N nodes on loopback; select context `local`."""
    with progress_reporter("capstan up", echo=click.echo) as report:
        cluster = LocalCluster(directory, echo=report)
        record, started = _up(cluster, nodes, runtime, base_port, demo, ha)
    _after_up(cluster, record, started, demo, timeout)


def _up(
    cluster: LocalCluster, nodes: int, runtime: str, base_port: int, demo: bool, ha: bool
) -> tuple[ClusterRecord, bool]:
    return cluster.up(
        nodes=nodes,
        runtime=runtime,
        base_port=base_port,
        ha=ha,
        require_image=demo,
        # The demo image starts on node-1 only: the others fetch it from a peer,
        # each fetch authorized by a single-use delegation token.
        image_nodes=[1] if demo else None,
    )


def _after_up(
    cluster: LocalCluster, record: ClusterRecord, started: bool, demo: bool, timeout: float
) -> None:
    if cluster.resumed:
        click.echo(
            f"local cluster resumed: restarted {', '.join(cluster.resumed)}; "
            "the store and the running workloads were kept"
        )
    elif not started:
        click.echo(
            f"the local cluster in {record.directory} is already up "
            f"({record.nodes} nodes, {record.runtime} runtime, orchestrator {record.endpoint})"
        )
    else:
        click.echo(
            f"local cluster up: orchestrator {record.endpoint}, {record.nodes} nodes "
            f"({record.runtime} runtime); context 'local' selected"
        )
    if demo:
        _demo(cluster, record, timeout)
    if started and not cluster.resumed:
        click.echo("try: capstan get nodes; capstan apply -f examples/demo.yaml; capstan down")


def _demo(cluster: LocalCluster, record: ClusterRecord, timeout: float) -> None:
    from orchestrator._cli.apply import wait_converged

    app = load_topology(demo_text(), source=DEMO_NAME)
    with ControlClient(cluster.context(record.endpoint)) as client:
        reply = client.apply(app)
        click.echo(f"applied {DEMO_NAME}: {reply.tenant}/{reply.app} generation {reply.generation}")
        wait_converged(client, reply, timeout=timeout, echo=click.echo)
        rows = [["INSTANCE", "NODE", "STATE"]]
        for w in sorted(
            client.list_workloads(tenant=reply.tenant, app=reply.app),
            key=lambda w: (w.service, w.index),
        ):
            rows.append([f"{w.service}.{w.index}", w.node or "-", w.state])
        entries = [e.json for e in client.audit_tail()]
    click.echo(table(rows))
    _print_delegations(entries)
    click.echo(f"logs: capstan logs {reply.app}/{app.services[0].name}.0")
    click.echo("audit: capstan audit tail --event delegation.issued --event task.completed")


def _print_delegations(entries: list[str]) -> None:
    import json

    from orchestrator._cli.audit import format_entry

    wanted = ("delegation.issued", "token.minted", "task.completed")
    shown = [
        raw
        for raw in entries
        if json.loads(raw)["event"] in wanted
        and (
            json.loads(raw)["event"] != "token.minted"
            or json.loads(raw).get("op") == "image.export"
        )
    ]
    if not shown:
        click.echo("peer-to-peer: every node already had the image (no delegation needed)")
        return
    click.echo("peer-to-peer image distribution, from the audit log:")
    for raw in shown:
        click.echo("  " + format_entry(raw))


@click.command("down", cls=OperatorCommand)
@_dir_option
@click.option(
    "--purge",
    is_flag=True,
    help="Also remove the PKI, the admin certificate and the context `local`.",
)
def down_cmd(directory: Path | None, purge: bool) -> None:
    """Stop the local cluster: every process it started and every container of its nodes."""
    cluster = LocalCluster(directory)
    record = cluster.down(purge=purge)
    if record is None:
        click.echo(f"no local cluster in {cluster.directory}" + (" (purged)" if purge else ""))
        return
    click.echo(
        f"local cluster in {cluster.directory} is down"
        + (" and purged" if purge else " (PKI kept; --purge removes it)")
    )


@click.command("status", cls=OperatorCommand)
@_dir_option
@click.option(
    "-o", "--output", "fmt", type=click.Choice(("text", "json")), default="text",
    show_default=True, help="json: every process with its endpoints (metrics included).",
)
def status_cmd(directory: Path | None, fmt: str) -> None:
    """The local cluster's processes, endpoints and nodes."""
    cluster = LocalCluster(directory)
    record = cluster.status()
    if record is None:
        if fmt == "json":
            click.echo(json.dumps({"directory": str(cluster.directory), "running": False}))
            return
        click.echo(f"no local cluster in {cluster.directory} (start one with `capstan up`)")
        return
    if fmt == "json":
        _status_json(cluster, record)
        return
    rows = [["PROCESS", "PID", "ALIVE", "LISTEN", "LOG"]]
    for p in record.processes:
        rows.append([p.name, str(p.pid), "yes" if p.alive() else "NO", p.listen, p.log])
    click.echo(f"directory:     {record.directory}")
    click.echo(f"runtime:       {record.runtime}")
    click.echo(
        f"orchestrator:  {record.endpoint} (join {record.join_endpoint}) {record.orchestrator_id}"
    )
    click.echo(table(rows))
    try:
        with ControlClient(cluster.context(record.endpoint), timeout=5.0) as client:
            nodes = client.list_nodes()
            control_plane = client.list_orchestrators()
    except ControlError as exc:
        click.echo(
            "orchestrator does not answer: `capstan up` restarts what died, keeping the workloads"
        )
        raise exc from None  # exit 5 (unavailable), 4 (refused)...
    ready = sum(1 for n in nodes if n.state == "ready")
    click.echo(f"nodes ready:   {ready}/{len(nodes)}")
    click.echo(format_orchestrators(control_plane))
    dead = [p.name for p in record.processes if not p.alive()]
    if dead:
        raise LocalClusterError(f"not running: {', '.join(dead)} (`capstan up` restarts them)")


def _status_json(cluster: LocalCluster, record: ClusterRecord) -> None:
    """The same facts as the text form, for programs: exit 5 when the orchestrator
    does not answer, after printing what is known."""
    nodes: dict[str, str] = {}
    problem: ControlError | None = None
    try:
        with ControlClient(cluster.context(record.endpoint), timeout=5.0) as client:
            nodes = {n.name: n.state for n in client.list_nodes()}
    except ControlError as exc:
        problem = exc
    processes = []
    for p in record.processes:
        entry: dict[str, object] = {
            "role": p.role,
            "name": p.name,
            "pid": p.pid,
            "alive": p.alive(),
            "listen": p.listen,
            "metrics": f"http://{p.metrics}/metrics" if p.metrics else "",
            "log": p.log,
        }
        if p.role == "orchestrator":
            entry["join"] = record.join_endpoint
            entry["id"] = record.orchestrator_id
        else:
            entry["id"] = p.node_id
            entry["state"] = nodes.get(p.name, "unknown")
        processes.append(entry)
    doc = {
        "directory": record.directory,
        "running": problem is None and all(p.alive() for p in record.processes),
        "runtime": record.runtime,
        "endpoint": record.endpoint,
        "processes": processes,
        "ready": sum(1 for s in nodes.values() if s == "ready"),
    }
    click.echo(json.dumps(doc, indent=2))
    if problem is not None:
        raise problem
    dead = [p.name for p in record.processes if not p.alive()]
    if dead:
        raise LocalClusterError(f"not running: {', '.join(dead)} (`capstan up` restarts them)")
