"""``capstan scale``, ``top``, ``events``, ``version`` and ``completion``: the day-2
verbs a kubectl user reaches for."""

from __future__ import annotations

import json
from collections.abc import Iterable

import click

from orchestrator._cli._common import (
    OperatorCommand,
    app_tenant,
    connect,
    context_option,
)
from orchestrator._cli._output import instance, memory, table
from orchestrator._events import event_line
from orchestrator.client import ControlError
from pki.errors import CapstanError


def _split_service(target: str) -> tuple[str, str]:
    app, sep, service = target.partition("/")
    if not sep or not app or not service or "/" in service or "." in service:
        raise click.BadParameter(
            f"must be APP/SERVICE (e.g. shop/web), got {target!r}", param_hint="TARGET"
        )
    return app, service


@click.command("scale", cls=OperatorCommand)
@click.argument("target", metavar="APP/SERVICE")
@click.argument("replicas", type=click.IntRange(min=0))
@click.option(
    "--tenant", default="", help="Tenant of the application (default: the one that has it)."
)
@context_option
def scale_cmd(target: str, replicas: int, tenant: str, context_name: str | None) -> None:
    """Set how many instances SERVICE of APP runs, e.g. `capstan scale shop/web 5`."""
    app_name, service = _split_service(target)
    with connect(context_name) as client:
        chosen = app_tenant(client, app_name, tenant)
        detail = client.get_app(app_name, chosen)
        app = detail.record.app
        found = [s for s in app.services if s.name == service]
        if not found:
            known = ", ".join(s.name for s in app.services) or "none"
            raise ControlError(
                "scale",
                "NOT_FOUND",
                f"application {detail.summary.tenant or chosen}/{app_name} has no service "
                f"{service!r} (services: {known})",
            )
        svc = found[0]
        if svc.HasField("autoscale") and not svc.autoscale.min <= replicas <= svc.autoscale.max:
            raise click.BadParameter(
                f"{service} autoscales between {svc.autoscale.min} and {svc.autoscale.max}",
                param_hint="REPLICAS",
            )
        before = svc.replicas
        svc.replicas = replicas
        reply = client.apply(app)
    click.echo(
        f"{reply.tenant}/{reply.app}/{service} scaled {before} -> {replicas} "
        f"(generation {reply.generation})"
    )


@click.command("top", cls=OperatorCommand)
@click.argument(
    "kind",
    type=click.Choice(["nodes", "node", "instances", "instance", "workloads", "pods"]),
    default="nodes",
)
@click.option("--app", default="", help="Instances of this application only.")
@click.option("--tenant", default="", help="This tenant only.")
@click.option("--node", default="", help="Instances on this node only.")
@context_option
def top_cmd(kind: str, app: str, tenant: str, node: str, context_name: str | None) -> None:
    """CPU and memory in use, as the nodes last reported it (`top nodes`, `top instances`)."""
    with connect(context_name) as client:
        workloads = [
            w
            for w in client.list_workloads(tenant=tenant, app=app, node=node)
            if w.state == "running"
        ]
        if kind.startswith("node"):
            nodes = sorted(client.list_nodes(), key=lambda n: n.name)
            rows = [["NAME", "CPU(cores)", "CPU%", "MEMORY", "MEMORY%", "INSTANCES"]]
            for n in nodes:
                mine = [w for w in workloads if w.node == n.name]
                cpu = sum(w.cpu_used for w in mine)
                mem = sum(w.memory_used for w in mine)
                rows.append(
                    [
                        n.name,
                        f"{cpu:.3f}",
                        _pct(cpu, n.cpus),
                        memory(mem),
                        _pct(mem, n.memory),
                        str(len(mine)),
                    ]
                )
        else:
            rows = [
                [
                    "TENANT",
                    "APP",
                    "INSTANCE",
                    "NODE",
                    "CPU(cores)",
                    "CPU/REQUEST",
                    "MEMORY",
                    "MEMORY/LIMIT",
                ]
            ]
            for w in sorted(workloads, key=lambda w: (w.tenant, w.app, w.service, w.index)):
                rows.append(
                    [
                        w.tenant,
                        w.app,
                        instance(w),
                        w.node or "-",
                        f"{w.cpu_used:.3f}",
                        _pct(w.cpu_used, w.cpu),
                        memory(w.memory_used),
                        _pct(w.memory_used, w.memory),
                    ]
                )
    click.echo(table(rows))


def _pct(used: float, total: float) -> str:
    return f"{100 * used / total:.0f}%" if total > 0 else "-"


@click.command("events", cls=OperatorCommand)
@click.option("-w", "--watch", is_flag=True, help="Keep printing new events.")
@click.option("--app", default="", help="Events of this application only.")
@click.option("--node", default="", help="Events of this node only.")
@click.option("--tenant", default="", help="Events of this tenant only.")
@click.option(
    "-n",
    "--lines",
    type=click.IntRange(min=0),
    default=50,
    show_default=True,
    help="How many past events (0: all).",
)
@click.option(
    "-o",
    "--output",
    "fmt",
    type=click.Choice(("text", "json")),
    default="text",
    show_default=True,
)
@context_option
def events_cmd(
    watch: bool,
    app: str,
    node: str,
    tenant: str,
    lines: int,
    fmt: str,
    context_name: str | None,
) -> None:
    """What happened in the cluster, with times: placements, moves, failures, scaling,
    refusals (from the audit log: admins and viewers). `-w` follows new ones."""
    with connect(context_name) as client:
        # Read past entries once, filter locally, then follow from where they ended.
        past = [json.loads(e.json) for e in client.audit_tail(limit=0 if lines == 0 else 5000)]
        shown = [e for e in past if _wanted(e, app=app, node=node, tenant=tenant)]
        if lines:
            shown = shown[-lines:]
        _print_events(shown, fmt)
        if watch:
            since = (past[-1]["seq"] + 1) if past else 0
            for entry in client.audit_tail(since=since, follow=True):
                e = json.loads(entry.json)
                if _wanted(e, app=app, node=node, tenant=tenant):
                    _print_events([e], fmt)


# Bookkeeping entries that are not events an operator follows.
_QUIET = frozenset({"token.minted", "token.verified"})


def _wanted(e: dict[str, object], *, app: str, node: str, tenant: str) -> bool:
    if e.get("event") in _QUIET:
        return False
    workload = str(e.get("workload", ""))
    parts = workload.split(".")
    if app and e.get("app") != app and (len(parts) < 2 or parts[1] != app):
        return False
    if tenant and e.get("tenant") != tenant and (not parts or parts[0] != tenant):
        return False
    return not node or e.get("node") == node


def _print_events(entries: Iterable[dict[str, object]], fmt: str) -> None:
    for e in entries:
        click.echo(json.dumps(e, sort_keys=True) if fmt == "json" else event_line(e))


@click.command("version", cls=OperatorCommand)
@click.option("--client", "client_only", is_flag=True, help="Only this CLI's version.")
@click.option(
    "-o",
    "--output",
    "fmt",
    type=click.Choice(("text", "json")),
    default="text",
    show_default=True,
)
@context_option
def version_cmd(client_only: bool, fmt: str, context_name: str | None) -> None:
    """Versions of this CLI, the orchestrator (and its epoch) and every node."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        mine = version("capstan")
    except PackageNotFoundError:
        mine = "unknown"
    if client_only:
        click.echo(json.dumps({"client": mine}) if fmt == "json" else f"client: {mine}")
        return
    with connect(context_name) as client:
        info = client.version()
    if fmt == "json":
        click.echo(
            json.dumps(
                {
                    "client": mine,
                    "orchestrator": {"version": info.version, "id": info.id, "epoch": info.epoch},
                    "nodes": [
                        {
                            "name": n.name,
                            "id": n.id,
                            "version": n.version,
                            "runtime": n.runtime,
                            "runtime_version": n.runtime_version,
                            "error": n.error,
                        }
                        for n in info.nodes
                    ],
                },
                indent=2,
            )
        )
        return
    click.echo(f"client:        {mine}")
    click.echo(f"orchestrator:  {info.version} ({info.id}, epoch {info.epoch})")
    rows = [["NODE", "VERSION", "RUNTIME"]]
    for n in sorted(info.nodes, key=lambda n: n.name):
        runtime = f"{n.runtime} {n.runtime_version}".strip() or "-"
        rows.append([n.name, n.version or f"? ({n.error})", runtime])
    click.echo(table(rows))


@click.command("completion", cls=OperatorCommand)
@click.argument("shell", type=click.Choice(["bash", "zsh"]))
def completion_cmd(shell: str) -> None:
    """A completion script: `source <(capstan completion bash)` (or put it in your rc)."""
    from click.shell_completion import get_completion_class

    cls = get_completion_class(shell)
    if cls is None:  # pragma: no cover - both are click built-ins
        raise CapstanError(f"no completion for {shell}")
    root = click.get_current_context().find_root()
    assert isinstance(root.command, click.Command)  # noqa: S101
    click.echo(cls(root.command, {}, "capstan", "_CAPSTAN_COMPLETE").source())


__all__ = ["completion_cmd", "events_cmd", "scale_cmd", "top_cmd", "version_cmd"]
