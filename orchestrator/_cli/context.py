"""``capstan context list|use|show``: choose which orchestrator the CLI talks to."""

from __future__ import annotations

import click

from orchestrator._cli._common import OperatorGroup, context_option
from orchestrator._cli._output import table
from orchestrator.context import ContextConfig


@click.group("context", cls=OperatorGroup)
def context_group() -> None:
    """List, show and select contexts (orchestrator endpoint + user certificate)."""


@context_group.command("list")
def list_cmd() -> None:
    """Every context; the current one is marked with *."""
    config = ContextConfig.load(missing_ok=True)
    rows = [["CURRENT", "NAME", "ENDPOINT", "CERT"]]
    for name in sorted(config.contexts):
        c = config.contexts[name]
        rows.append(["*" if name == config.current else "", name, c.endpoint, str(c.cert)])
    click.echo(table(rows))


@context_group.command("use")
@click.argument("name")
def use_cmd(name: str) -> None:
    """Make NAME the current context."""
    config = ContextConfig.load()
    config.use(name)
    config.save()
    click.echo(f"current context is now {name!r}")


@context_group.command("show")
@context_option
def show_cmd(context_name: str | None) -> None:
    """The chosen context's endpoint and files."""
    config = ContextConfig.load()
    c = config.resolve(context_name)
    click.echo(f"name:      {c.name}")
    click.echo(f"endpoint:  {c.endpoint}")
    click.echo(f"ca:        {c.ca}")
    click.echo(f"cert:      {c.cert}")
    click.echo(f"key:       {c.key}")
    click.echo(f"file:      {config.path}")
