"""``capstan get`` and ``capstan describe``: read-only views of the cluster."""

from __future__ import annotations

import json
import shlex
import time
from collections.abc import Callable

import click
from google.protobuf.message import Message

from orchestrator._cli._common import OperatorCommand, app_tenant, connect, context_option
from orchestrator._cli._output import (
    Column,
    OutputFormat,
    age,
    app_columns,
    cores,
    created,
    instance,
    isolation,
    memory,
    node_columns,
    node_schedule,
    render,
    shown_state,
    table,
    to_dicts,
    workload_columns,
)
from orchestrator.client import ControlClient, ControlError
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
    "orchestrators": "orchestrators",
    "orchestrator": "orchestrators",
}


def _fetch(client: ControlClient, kind: str, *, tenant: str, app: str, node: str) -> list[Message]:
    if kind == "apps":
        summaries = [a for a in client.list_apps(tenant) if not app or a.name == app]
        return list[Message](summaries)
    if kind == "workloads":
        workloads = client.list_workloads(tenant=tenant, app=app, node=node)
        workloads.sort(key=lambda w: (w.tenant, w.app, w.service, w.index))
        return list(workloads)
    nodes = sorted(client.list_nodes(), key=lambda n: n.name)
    return list[Message](nodes)


def _key(kind: str, record: Message) -> str:
    """What ``get KIND NAME`` matches and ``-o name`` prints after ``KIND/``."""
    if kind == "workloads":
        assert isinstance(record, cpb.Workload)  # noqa: S101 - a programming error
        return f"{record.app}/{instance(record)}"
    return str(getattr(record, "name", ""))


def _columns(kind: str, now: float) -> list[Column]:
    if kind == "apps":
        return app_columns(now)
    return workload_columns(now) if kind == "workloads" else node_columns(now)


_SINGULAR = {"apps": "app", "workloads": "workload", "nodes": "node"}


@click.command("get", cls=OperatorCommand)
@click.argument(
    "kind", type=click.Choice(sorted(_KINDS)), metavar="apps|workloads|nodes|orchestrators"
)
@click.argument("name", required=False)
@click.option(
    "-o",
    "--output",
    "fmt",
    type=OutputFormat(),
    default="table",
    show_default=True,
    help="Output format (jsonpath=TEMPLATE as kubectl: '{.items[*].name}').",
)
@click.option("--app", default="", help="Workloads of this application only.")
@click.option("--tenant", default="", help="This tenant only.")
@click.option("-A", "--all-tenants", is_flag=True, help="Every tenant you may see (the default).")
@click.option("--node", default="", help="Workloads on this node only.")
@click.option("-w", "--watch", is_flag=True, help="Then print each change as it happens.")
@context_option
def get_cmd(
    *,
    kind: str,
    name: str | None,
    fmt: str,
    app: str,
    tenant: str,
    all_tenants: bool,
    node: str,
    watch: bool,
    context_name: str | None,
) -> None:
    """List applications, workloads, nodes or orchestrators; `get KIND NAME` shows one
    (exit 3 if none).

    A workload's NAME is APP/SERVICE.INDEX (e.g. shop/web.0). `get orchestrators`
    shows the control plane: the leader and its epoch, every orchestrator, and the
    health of each etcd member.
    """
    kind = _KINDS[kind]
    if kind == "orchestrators":
        with connect(context_name) as client:
            info = client.list_orchestrators()
        if fmt == "json":
            from google.protobuf.json_format import MessageToDict

            click.echo(json.dumps(MessageToDict(info), indent=2, sort_keys=True))
        else:
            click.echo(format_orchestrators(info))
        return
    if all_tenants and tenant:
        raise click.UsageError("give --tenant or -A/--all-tenants, not both")
    if name and kind == "workloads" and "/" not in name:
        raise click.BadParameter(
            f"a workload is named APP/SERVICE.INDEX, got {name!r}", param_hint="NAME"
        )
    with connect(context_name) as client:

        def fetch() -> list[Message]:
            records = _fetch(client, kind, tenant=tenant, app=app, node=node)
            if name:
                records = [r for r in records if _key(kind, r) == name]
            return records

        records = fetch()
        if name and not records:
            raise ControlError(
                "get",
                "NOT_FOUND",
                f"no {_SINGULAR[kind]} named {name!r}" + (f" in tenant {tenant}" if tenant else ""),
            )
        now = time.time()
        columns = _columns(kind, now)
        out = render(
            records,
            columns,
            fmt,
            kind=_SINGULAR[kind],
            names=lambda r: _key(kind, r),
            single=bool(name),
        )
        if out:
            click.echo(out)
        if watch:
            _watch(fetch, kind, fmt, records)


def format_orchestrators(info: cpb.OrchestratorsInfo) -> str:
    """The control plane as ``get orchestrators`` and ``status`` print it."""
    leader = f"{info.leader} at {info.leader_address}" if info.leader else "none (electing)"
    lines = [f"store: {info.store}   leader: {leader}   epoch: {info.epoch}"]
    rows = [["ORCHESTRATOR", "ROLE", "ADDRESS", "JOIN"]]
    for m in info.members:
        rows.append(
            [m.member, "leader" if m.leader else "follower", m.address, m.join_address or "-"]
        )
    lines.append(table(rows))
    if info.etcd:
        rows = [["ETCD MEMBER", "HEALTH", "ROLE", "ENDPOINT", "ERROR"]]
        for e in info.etcd:
            rows.append(
                [
                    e.name,
                    "healthy" if e.healthy else "UNHEALTHY",
                    "leader" if e.leader else "follower",
                    e.endpoint,
                    e.error or "-",
                ]
            )
        lines.append(table(rows))
    return "\n".join(lines)


def _watch(
    fetch: Callable[[], list[Message]],
    kind: str,
    fmt: str,
    first: list[Message],
    *,
    interval: float = 1.0,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Poll and print each record that changed (a table row, a name, a JSON line) and
    each that went away, until interrupted (Ctrl-C: exit 130)."""
    tabular = fmt in ("table", "wide")

    def rows(records: list[Message]) -> dict[str, list[str]]:
        now = time.time()
        chosen = [c for c in _columns(kind, now) if fmt == "wide" or not c.wide_only]
        return {_key(kind, r): [c.value(r) for c in chosen] for r in records}

    def line(record: Message) -> str:
        if fmt.startswith("jsonpath=") or fmt == "name":
            return render(
                [record], [], fmt, kind=_SINGULAR[kind], names=lambda r: _key(kind, r), single=True
            )
        return json.dumps(to_dicts([record])[0], sort_keys=True)

    header = [c.header for c in _columns(kind, 0) if fmt == "wide" or not c.wide_only]
    seen = rows(first)
    seen_records = {_key(kind, r): r for r in first}
    widths = [max([len(h), *(len(v[i]) for v in seen.values())]) for i, h in enumerate(header)]
    while True:
        sleep(interval)
        records = fetch()
        current = rows(records)
        by_key = {_key(kind, r): r for r in records}
        for key, values in current.items():
            if seen.get(key) == values and (tabular or seen_records[key] == by_key[key]):
                continue
            if tabular:
                click.echo(
                    "  ".join(v.ljust(w) for v, w in zip(values, widths, strict=True)).rstrip()
                )
            else:
                click.echo(line(by_key[key]))
        for key in seen.keys() - current.keys():
            click.echo(f"{_SINGULAR[kind]}/{key} deleted")
        seen, seen_records = current, by_key


_STRATEGY = {tpb.PLACEMENT_STRATEGY_SPREAD: "spread", tpb.PLACEMENT_STRATEGY_BINPACK: "binpack"}
_RESTART = {
    tpb.RESTART_POLICY_ALWAYS: "always",
    tpb.RESTART_POLICY_ON_FAILURE: "on-failure",
    tpb.RESTART_POLICY_NEVER: "never",
}


@click.command("describe", cls=OperatorCommand)
@click.argument("kind", type=click.Choice(["app", "node", "tenant"]))
@click.argument("name")
@click.option(
    "--tenant", default="", help="Tenant of the application (default: the one that has it)."
)
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
    """Details of one application (spec, instances, events), one node, or one tenant
    (what its applications ask for against its quota)."""
    now = time.time()
    with connect(context_name) as client:
        if kind == "tenant":
            usage = client.describe_tenant(name)
            click.echo(render([usage], [], fmt) if fmt != "text" else describe_tenant(usage))
            return
        if kind == "app":
            detail = client.get_app(name, app_tenant(client, name, tenant))
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
        workloads = client.list_workloads(node=name)
        click.echo(describe_node(nodes[0], workloads, now, _node_events(client, name)))


def describe_tenant(usage: cpb.TenantUsage) -> str:
    """Use against quota, one line per resource ("-": no limit)."""
    has = usage.HasField("quota")
    q = usage.quota

    def limit(value: float, shown: str) -> str:
        return shown if has and value else "-"

    return "\n".join([
        f"Tenant:       {usage.tenant}",
        f"Applications: {usage.apps}",
        f"{'':14}{'USED':>12}  {'QUOTA':>12}",
        f"{'cpu':14}{cores(usage.cpu):>12}  {limit(q.cpu, cores(q.cpu)):>12}",
        f"{'memory':14}{memory(usage.memory):>12}  {limit(q.memory, memory(q.memory)):>12}",
        f"{'instances':14}{usage.instances:>12}  {limit(q.instances, str(q.instances)):>12}",
    ])


def _node_events(client: ControlClient, name: str, limit: int = 20) -> list[str] | None:
    """The node's last audit events with their time; None when the role may not read
    the audit log (tenants)."""
    from orchestrator._events import event_line

    try:
        entries = [json.loads(e.json) for e in client.audit_tail(limit=2000)]
    except ControlError as exc:
        if exc.code == "PERMISSION_DENIED":
            return None
        raise
    mine = [e for e in entries if e.get("node") == name or e.get("name") == name]
    return [event_line(e) for e in mine[-limit:]]


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
                shown_state(w),
                w.desired,
                str(w.restarts),
                age(created(w), now),
                " ".join(w.message.split()) or "-",
            ]
        )
    lines.extend("  " + line for line in table(rows).splitlines())
    lines.append("Events:")
    events = list(detail.events)[-20:]
    lines.extend(f"  {e}" for e in events) if events else lines.append("  <none>")
    return "\n".join(lines)


def describe_node(
    node: cpb.NodeRecord,
    workloads: list[cpb.Workload],
    now: float,
    events: list[str] | None = None,
) -> str:
    lines = [
        f"Name:        {node.name}",
        f"ID:          {node.id}",
        f"Address:     {node.address}",
        f"State:       {node.state}",
        f"Scheduling:  {node_schedule(node)}",
        f"Runtime:     {node.runtime or '-'} ({node.mode or 'push'})",
        f"Pool:        {node.pool or 'shared'}",
        f"Isolation:   {isolation(node.isolation)}",
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
        rows.append([w.tenant, w.app, instance(w), shown_state(w), str(w.restarts)])
    lines.extend("  " + line for line in table(rows).splitlines())
    lines.append("Events:")
    if events is None:
        lines.append("  <not shown: the audit log is for admins and viewers>")
    else:
        lines.extend(f"  {e}" for e in events) if events else lines.append("  <none>")
    return "\n".join(lines)


__all__ = [
    "describe_app", "describe_cmd", "describe_node", "describe_tenant", "get_cmd", "to_dicts"
]
