"""``capstan get`` and ``capstan describe``: read-only views of the cluster."""

from __future__ import annotations

import shlex
import time

import click

from orchestrator._cli._common import OperatorCommand, connect, context_option
from orchestrator._cli._output import (
    FORMATS,
    age,
    app_columns,
    cores,
    instance,
    memory,
    node_columns,
    node_schedule,
    render,
    table,
    to_dicts,
    workload_columns,
)
from orchestrator.client import ControlError
from protos import control_pb2 as cpb
from protos import topology_pb2 as tpb

_KINDS = {
    "apps": "apps",
    "app": "apps",
    "applications": "apps",
    "application": "apps",
    "workloads": "workloads",
    "workload": "workloads",
    "wl": "workloads",
    "instances": "workloads",
    "nodes": "nodes",
    "node": "nodes",
    "no": "nodes",
}


@click.command("get", cls=OperatorCommand)
@click.argument("kind", type=click.Choice(sorted(_KINDS)), metavar="apps|workloads|nodes")
@click.option(
    "-o",
    "--output",
    "fmt",
    type=click.Choice(FORMATS),
    default="table",
    show_default=True,
    help="Output format.",
)
@click.option("--app", default="", help="Workloads of this application only.")
@click.option("--tenant", default="", help="This tenant only (default: all you may see).")
@click.option("--node", default="", help="Workloads on this node only.")
@context_option
def get_cmd(
    *, kind: str, fmt: str, app: str, tenant: str, node: str, context_name: str | None
) -> None:
    """List applications, workloads or nodes."""
    kind = _KINDS[kind]
    now = time.time()
    with connect(context_name) as client:
        if kind == "apps":
            apps = client.list_apps(tenant)
            if app:
                apps = [a for a in apps if a.name == app]
            click.echo(render(apps, app_columns(now), fmt))
        elif kind == "workloads":
            workloads = client.list_workloads(tenant=tenant, app=app, node=node)
            workloads.sort(key=lambda w: (w.tenant, w.app, w.service, w.index))
            click.echo(render(workloads, workload_columns(now), fmt))
        else:
            nodes = sorted(client.list_nodes(), key=lambda n: n.name)
            click.echo(render(nodes, node_columns(now), fmt))


_STRATEGY = {tpb.PLACEMENT_STRATEGY_SPREAD: "spread", tpb.PLACEMENT_STRATEGY_BINPACK: "binpack"}
_RESTART = {
    tpb.RESTART_POLICY_ALWAYS: "always",
    tpb.RESTART_POLICY_ON_FAILURE: "on-failure",
    tpb.RESTART_POLICY_NEVER: "never",
}


@click.command("describe", cls=OperatorCommand)
@click.argument("kind", type=click.Choice(["app", "node"]))
@click.argument("name")
@click.option("--tenant", default="", help="Tenant of the application (default: yours).")
@click.option(
    "-o",
    "--output",
    "fmt",
    type=click.Choice(("text", "json", "yaml")),
    default="text",
    show_default=True,
)
@context_option
def describe_cmd(kind: str, name: str, tenant: str, fmt: str, context_name: str | None) -> None:
    """Details of one application (spec, instances, events) or one node."""
    now = time.time()
    with connect(context_name) as client:
        if kind == "app":
            detail = client.get_app(name, tenant)
            if fmt != "text":
                click.echo(render([detail], [], fmt))
                return
            click.echo(describe_app(detail, now))
            return
        nodes = [n for n in client.list_nodes() if n.name == name]
        if not nodes:
            raise ControlError("ListNodes", "NOT_FOUND", f"no node named {name!r}")
        if fmt != "text":
            click.echo(render(nodes, [], fmt))
            return
        click.echo(describe_node(nodes[0], client.list_workloads(node=name), now))


def describe_app(detail: cpb.AppDetail, now: float) -> str:
    app = detail.record.app
    s = detail.summary
    lines = [
        f"Name:        {app.name}",
        f"Tenant:      {s.tenant or app.tenant}",
        f"Generation:  {detail.record.generation}",
        f"Ready:       {s.running}/{s.desired}",
        f"Created:     {age(detail.record.created_at, now)} ago",
        f"Updated:     {age(detail.record.updated_at, now)} ago",
    ]
    if detail.record.deleting:
        lines.append("Deleting:    yes")
    lines.append("Services:")
    for svc in app.services:
        lines.append(f"  {svc.name}:")
        lines.append(f"    image:     {svc.image}")
        if svc.command:
            lines.append(f"    command:   {shlex.join(svc.command)}")
        lines.append(f"    replicas:  {svc.replicas}")
        if svc.resources.cpu or svc.resources.memory:
            lines.append(
                f"    resources: cpu {cores(svc.resources.cpu)}, "
                f"memory {memory(svc.resources.memory)}"
            )
        lines.append(f"    placement: {_STRATEGY.get(svc.placement.strategy, 'spread')}")
        lines.append(f"    restart:   {_RESTART.get(svc.restart, 'always')}")
        if svc.HasField("autoscale"):
            a = svc.autoscale
            lines.append(f"    autoscale: {a.min}..{a.max} at cpu {a.target_cpu:g}")
        for v in svc.volumes:
            lines.append(f"    volume:    {v.name} -> {v.path}{' (ro)' if v.read_only else ''}")
    lines.append("Instances:")
    rows = [["INSTANCE", "NODE", "STATE", "DESIRED", "RESTARTS", "AGE", "MESSAGE"]]
    for w in sorted(detail.workloads, key=lambda w: (w.service, w.index)):
        rows.append(
            [
                instance(w),
                w.node or "-",
                w.state,
                w.desired,
                str(w.restarts),
                age(w.updated_at, now),
                " ".join(w.message.split()) or "-",
            ]
        )
    lines.extend("  " + line for line in table(rows).splitlines())
    lines.append("Events:")
    events = list(detail.events)[-20:]
    lines.extend(f"  {e}" for e in events) if events else lines.append("  <none>")
    return "\n".join(lines)


def describe_node(node: cpb.NodeRecord, workloads: list[cpb.Workload], now: float) -> str:
    lines = [
        f"Name:        {node.name}",
        f"ID:          {node.id}",
        f"Address:     {node.address}",
        f"State:       {node.state}",
        f"Scheduling:  {node_schedule(node)}",
        f"Runtime:     {node.runtime or '-'} ({node.mode or 'push'})",
        f"Pool:        {node.pool or 'shared'}",
        f"CPU:         {cores(node.allocated_cpu)}/{cores(node.cpus)}",
        f"Memory:      {memory(node.allocated_memory)}/{memory(node.memory)}",
        f"Heartbeat:   {age(node.last_heartbeat, now)} ago",
        f"Joined:      {age(node.joined_at, now)} ago",
        f"Cert serial: {node.cert_serial or '-'}",
    ]
    if node.labels:
        lines.append(
            "Labels:      " + ", ".join(f"{k}={v}" for k, v in sorted(node.labels.items()))
        )
    lines.append("Workloads:")
    rows = [["TENANT", "APP", "INSTANCE", "STATE", "RESTARTS"]]
    for w in sorted(workloads, key=lambda w: (w.tenant, w.app, w.service, w.index)):
        rows.append([w.tenant, w.app, instance(w), w.state, str(w.restarts)])
    lines.extend("  " + line for line in table(rows).splitlines())
    return "\n".join(lines)


__all__ = ["describe_app", "describe_cmd", "describe_node", "get_cmd", "to_dicts"]
