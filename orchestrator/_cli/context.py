"""``capstan context list|show|use|add|delete``: which orchestrator the CLI talks to."""

from __future__ import annotations

from pathlib import Path

import click

from orchestrator._cli._common import OperatorGroup, chosen_context, context_option
from orchestrator._cli._output import table
from orchestrator.context import Context, ContextConfig, ContextError, parse_endpoint


@click.group("context", cls=OperatorGroup)
def context_group() -> None:
    """List, show, add, delete and select contexts (orchestrator endpoint + user certificate)."""


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
    c = config.resolve(chosen_context(context_name))
    click.echo(f"name:      {c.name}")
    click.echo(f"endpoint:  {c.endpoint}")
    click.echo(f"ca:        {c.ca}")
    click.echo(f"cert:      {c.cert}")
    click.echo(f"key:       {c.key}")
    click.echo(f"file:      {config.path}")


def _pem_file(_ctx: click.Context, param: click.Parameter, value: Path) -> Path:
    # Absolute: the context file may be read from another working directory.
    path = value.expanduser().absolute()
    if not path.is_file():
        raise click.BadParameter(f"{path} is not a file", param=param)
    return path


@context_group.command("add")
@click.argument("name")
@click.option(
    "--endpoint",
    "endpoints",
    required=True,
    multiple=True,
    metavar="HOST:PORT",
    help="The orchestrator's ControlService address (repeat for each orchestrator of HA).",
)
@click.option(
    "--ca",
    required=True,
    type=click.Path(path_type=Path),
    callback=_pem_file,
    help="Trust bundle (ca.crt).",
)
@click.option(
    "--cert",
    required=True,
    type=click.Path(path_type=Path),
    callback=_pem_file,
    help="Your certificate chain (capstan pki issue user ...).",
)
@click.option(
    "--key",
    required=True,
    type=click.Path(path_type=Path),
    callback=_pem_file,
    help="Its private key.",
)
@click.option("--use", "select", is_flag=True, help="Also make it the current context.")
@click.option("--force", is_flag=True, help="Replace an existing context of that name.")
def add_cmd(
    *,
    name: str,
    endpoints: tuple[str, ...],
    ca: Path,
    cert: Path,
    key: Path,
    select: bool,
    force: bool,
) -> None:
    """Add context NAME: an orchestrator endpoint and the files of your certificate."""
    config = ContextConfig.load(missing_ok=True)
    if name in config.contexts and not force:
        raise ContextError(f"{config.path}: context {name!r} exists (--force replaces it)")
    # Several --endpoint (or one comma-separated list): the orchestrators of one HA
    # cluster, stored as one comma-separated endpoint.
    listed = [e.strip() for item in endpoints for e in item.split(",") if e.strip()]
    for endpoint in listed:
        parse_endpoint(endpoint, f"--endpoint {endpoint!r}")
    config.set(Context(name, ",".join(listed), ca, cert, key), select=select)
    config.save()
    click.echo(f"context {name!r} added" + (" and selected" if select else ""))


@context_group.command("delete")
@click.argument("name")
def delete_cmd(name: str) -> None:
    """Remove context NAME (its certificate files stay where they are)."""
    config = ContextConfig.load()
    config.resolve(name)  # an unknown name is an error naming the known ones
    was_current = config.current == name
    config.remove(name)
    config.save()
    click.echo(
        f"context {name!r} deleted"
        + ("; no current context now (capstan context use NAME)" if was_current else "")
    )
