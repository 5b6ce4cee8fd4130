"""``capstan logs APP/INSTANCE``: read an instance's output straight from its node.

The orchestrator only authorizes: ControlService.Logs returns a grant (node
address, container, and a single-use token bound to the caller's certificate);
the CLI then calls the node itself with the user's own certificate.
"""

from __future__ import annotations

import sys

import click

from orchestrator._cli._common import OperatorCommand, app_tenant, connect, context_option


def parse_target(target: str) -> tuple[str, str]:
    """``shop/web.1`` -> ("shop", "web.1"); ``shop/web`` means instance 0."""
    app, sep, inst = target.partition("/")
    if not sep or not app or not inst or "/" in inst:
        raise click.BadParameter(
            f"must be APP/SERVICE.INDEX (e.g. shop/web.0), got {target!r}", param_hint="TARGET"
        )
    service, dot, index = inst.rpartition(".")
    if not dot:
        return app, f"{inst}.0"
    if not service or not index.isdigit():
        raise click.BadParameter(
            f"instance must be SERVICE.INDEX (e.g. web.0), got {inst!r}", param_hint="TARGET"
        )
    return app, inst


@click.command("logs", cls=OperatorCommand)
@click.argument("target", metavar="APP/INSTANCE")
@click.option("-f", "--follow", is_flag=True, help="Keep streaming new output.")
@click.option(
    "--tail", type=click.IntRange(min=0), default=0, help="Only the last N lines (0: all)."
)
@click.option(
    "--tenant", default="", help="Tenant of the application (default: the one that has it)."
)
@context_option
def logs_cmd(target: str, follow: bool, tail: int, tenant: str, context_name: str | None) -> None:
    """Print an instance's output (stdout and stderr), e.g. `capstan logs shop/web.0`."""
    app, inst = parse_target(target)
    with connect(context_name) as client:
        tenant = app_tenant(client, app, tenant)
        out = sys.stdout.buffer
        if follow:
            # Re-authorized whenever its grant ends (see ControlClient.follow_logs).
            chunks = client.follow_logs(app, inst, tenant=tenant, tail=tail)
        else:
            grant = client.logs_grant(app, inst, tenant=tenant, follow=False, tail=tail)
            chunks = client.stream_logs(grant, follow=False, tail=tail)
        for chunk in chunks:
            out.write(chunk)
            out.flush()
