"""``capstan cordon|uncordon|drain NODE``."""

from __future__ import annotations

import click

from orchestrator._cli._common import OperatorCommand, connect, context_option
from orchestrator._cli._output import node_schedule


@click.command("cordon", cls=OperatorCommand)
@click.argument("node")
@context_option
def cordon_cmd(node: str, context_name: str | None) -> None:
    """Place nothing new on NODE (what runs there stays)."""
    with connect(context_name) as client:
        record = client.cordon(node)
    click.echo(f"node {record.name} {node_schedule(record)}")


@click.command("uncordon", cls=OperatorCommand)
@click.argument("node")
@context_option
def uncordon_cmd(node: str, context_name: str | None) -> None:
    """Let the scheduler use NODE again (also ends a drain)."""
    with connect(context_name) as client:
        record = client.uncordon(node)
    click.echo(f"node {record.name} {node_schedule(record)}")


@click.command("drain", cls=OperatorCommand)
@click.argument("node")
@context_option
def drain_cmd(node: str, context_name: str | None) -> None:
    """Cordon NODE and move its workloads to other nodes."""
    with connect(context_name) as client:
        record = client.drain(node)
    left = record.workloads
    click.echo(f"node {record.name} {node_schedule(record)} "
               f"({left} workload{'s' if left != 1 else ''} left to move)")
