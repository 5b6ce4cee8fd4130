"""``capstan pool set|list`` and ``capstan quota set``: the admin's sandbox rules.

``pool set POOL`` replaces the pool's whole policy with what the flags say (a flag not
given is not permitted): host networking, uid 0, capabilities given back, unisolated
nodes, ports below 1024. ``shared`` names the shared pool. Nodes keep the ceiling they
were given at join: loosening a pool reaches nodes that join afterwards (or a join
token's own ``--allow-*`` flags); tightening applies at once (docs/sandbox.md).
"""

from __future__ import annotations

import click

from orchestrator._cli._common import OperatorCommand, connect, context_option
from orchestrator._cli._output import cores, memory
from orchestrator.quantities import parse_memory
from protos import control_pb2 as cpb
from protos import node_pb2 as npb

SHARED = "shared"


def pool_arg(name: str) -> str:
    return "" if name == SHARED else name


def policy_line(rec: cpb.PoolPolicyRecord) -> str:
    p = rec.policy
    allowed = [name for flag, name in ((p.host_network, "host-network"), (p.root, "root"),
                                       (p.unisolated, "unisolated"), (p.low_ports, "low-ports"))
               if flag]
    allowed += [f"cap:{c}" for c in p.cap_add]
    return f"{rec.pool or SHARED}: {', '.join(allowed) or 'defaults only'}"


def policy_options(fn: click.decorators.FC) -> click.decorators.FC:
    """The ``--allow-*`` flags, shared by ``pool set`` and join tokens."""
    for option in reversed((
        click.option("--allow-host-network", is_flag=True, help="Permit network: host."),
        click.option("--allow-root", is_flag=True, help="Permit user 0 (uid or gid)."),
        click.option("--allow-cap", "allow_caps", multiple=True, metavar="CAP",
                     help="Permit capAdd of CAP (repeat), e.g. NET_BIND_SERVICE."),
        click.option("--allow-unisolated", is_flag=True,
                     help="Place the pool's workloads on unisolated nodes too."),
        click.option("--allow-low-ports", is_flag=True, help="Permit ports below 1024."),
    )):
        fn = option(fn)
    return fn


def policy_of(
    allow_host_network: bool, allow_root: bool, allow_caps: tuple[str, ...],
    allow_unisolated: bool, allow_low_ports: bool,
) -> npb.SandboxPolicy:
    return npb.SandboxPolicy(
        host_network=allow_host_network, root=allow_root, cap_add=sorted(set(allow_caps)),
        unisolated=allow_unisolated, low_ports=allow_low_ports,
    )


@click.group("pool")
def pool_group() -> None:
    """Sandbox policy per node pool (admin)."""


@pool_group.command("set", cls=OperatorCommand)
@click.argument("pool")
@policy_options
@context_option
def pool_set_cmd(
    pool: str, allow_host_network: bool, allow_root: bool, allow_caps: tuple[str, ...],
    allow_unisolated: bool, allow_low_ports: bool, context_name: str | None,
) -> None:
    """Set what POOL's instances may have beyond the defaults (POOL: a tenant, or shared)."""
    policy = policy_of(allow_host_network, allow_root, allow_caps, allow_unisolated,
                       allow_low_ports)
    with connect(context_name) as client:
        rec = client.set_pool_policy(pool_arg(pool), policy)
    click.echo(policy_line(rec))


@pool_group.command("list", cls=OperatorCommand)
@context_option
def pool_list_cmd(context_name: str | None) -> None:
    """Every pool's policy (a pool without one: defaults only)."""
    with connect(context_name) as client:
        for rec in client.list_pool_policies():
            click.echo(policy_line(rec))


@click.group("quota")
def quota_group() -> None:
    """Tenant quotas (admin)."""


@quota_group.command("set", cls=OperatorCommand)
@click.argument("tenant")
@click.option("--cpu", type=click.FloatRange(min=0), default=0.0,
              help="Cores all its instances may request (0: no limit).")
@click.option("--memory", "memory_text", default="0",
              help="Memory all its instances may request, e.g. 4Gi (0: no limit).")
@click.option("--instances", type=click.IntRange(min=0), default=0,
              help="Instances it may run (0: no limit).")
@context_option
def quota_set_cmd(
    tenant: str, cpu: float, memory_text: str, instances: int, context_name: str | None
) -> None:
    """Bound what TENANT's applications may ask for (see `capstan describe tenant`)."""
    limit, problem = parse_memory(memory_text) if memory_text != "0" else (0, None)
    if problem or limit is None:
        raise click.BadParameter(problem or "not a memory size", param_hint="--memory")
    with connect(context_name) as client:
        quota = client.set_quota(tenant, cpu=cpu, memory=limit, instances=instances)
    click.echo(
        f"quota of {quota.tenant}: cpu {cores(quota.cpu) if quota.cpu else '-'}, "
        f"memory {memory(quota.memory) if quota.memory else '-'}, "
        f"instances {quota.instances or '-'}"
    )
