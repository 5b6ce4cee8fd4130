"""``capstan rebalance [--dry-run]``: even out instances across nodes."""

from __future__ import annotations

import click

from orchestrator._cli._common import OperatorCommand, connect, context_option
from orchestrator._cli._output import table


@click.command("rebalance", cls=OperatorCommand)
@click.option("--dry-run", is_flag=True, help="Show the moves; change nothing.")
@context_option
def rebalance_cmd(dry_run: bool, context_name: str | None) -> None:
    """Move a few instances from the busiest nodes to the idlest ones.

    Each move passes the scheduler's filters and keeps every service within its
    disruption budget (replicas - maxUnavailable running); volumes move along.
    Run it again to continue once the moved instances run.
    """
    with connect(context_name) as client:
        plan = client.rebalance(dry_run=dry_run)
    click.echo(plan.summary)
    if not plan.moves:
        click.echo("no moves")
        return
    rows = [[m.workload, m.from_node, m.to_node, m.reason] for m in plan.moves]
    click.echo(table([["WORKLOAD", "FROM", "TO", "WHY"], *rows]))
    verb = "planned (dry run)" if dry_run else "started"
    click.echo(f"{len(plan.moves)} move{'s' if len(plan.moves) != 1 else ''} {verb}")
