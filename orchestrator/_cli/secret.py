"""``capstan secret create|list|describe|rotate|delete``: values go in, never come out.

No command prints a value: ``describe`` shows the version, a fingerprint that tells
versions apart, and which services use it on which nodes.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from orchestrator._cli._common import OperatorCommand, connect, context_option
from orchestrator._cli._output import Column, OutputFormat, age, render
from protos import secrets_pb2 as spb

_FORMATS = ("table", "wide", "json", "yaml", "name")


def _columns() -> list[Column]:
    def f(r: object) -> spb.SecretInfo:
        assert isinstance(r, spb.SecretInfo)  # noqa: S101 - a programming error, not input
        return r

    return [
        Column("TENANT", lambda r: f(r).tenant),
        Column("NAME", lambda r: f(r).name),
        Column("VERSION", lambda r: str(f(r).version)),
        Column("FINGERPRINT", lambda r: f(r).fingerprint),
        Column("AGE", lambda r: age(f(r).created_at)),
        Column("UPDATED", lambda r: age(f(r).updated_at), wide_only=True),
    ]


def _value(from_file: str | None, from_literal: str | None, from_stdin: bool) -> bytes:
    given = [x for x in (from_file, from_literal) if x is not None] + ([True] if from_stdin else [])
    if len(given) != 1:
        raise click.UsageError("give exactly one of --from-file, --from-literal, --from-stdin")
    if from_file is not None:
        try:
            return Path(from_file).read_bytes()
        except OSError as exc:
            raise click.UsageError(f"--from-file {from_file}: {exc.strerror}") from None
    if from_literal is not None:
        return from_literal.encode()
    return sys.stdin.buffer.read()


def _source_options(fn: click.decorators.FC) -> click.decorators.FC:
    for option in reversed(
        (
            click.option("--from-file", metavar="FILE", help="The value is this file's bytes."),
            click.option(
                "--from-literal",
                metavar="VALUE",
                help="The value itself (it stays in your shell history: prefer a file).",
            ),
            click.option("--from-stdin", is_flag=True, help="Read the value from standard input."),
            click.option("--tenant", default="", help="Tenant (default: your own)."),
        )
    ):
        fn = option(fn)
    return fn


@click.group("secret")
def secret_group() -> None:
    """Tenant secrets: encrypted at rest, released sealed to the node of each instance."""


def _summary(info: spb.SecretInfo, verb: str) -> str:
    return f"secret {info.tenant}/{info.name} {verb} (version {info.version}, {info.fingerprint})"


@secret_group.command("create", cls=OperatorCommand)
@click.argument("name")
@_source_options
@context_option
def create_cmd(
    name: str,
    from_file: str | None,
    from_literal: str | None,
    from_stdin: bool,
    tenant: str,
    context_name: str | None,
) -> None:
    """Create secret NAME from a file, a literal or standard input."""
    value = _value(from_file, from_literal, from_stdin)
    with connect(context_name) as client:
        click.echo(_summary(client.create_secret(name, value, tenant), "created"))


@secret_group.command("rotate", cls=OperatorCommand)
@click.argument("name")
@_source_options
@context_option
def rotate_cmd(
    name: str,
    from_file: str | None,
    from_literal: str | None,
    from_stdin: bool,
    tenant: str,
    context_name: str | None,
) -> None:
    """Give secret NAME a new version; running instances get the new file."""
    value = _value(from_file, from_literal, from_stdin)
    with connect(context_name) as client:
        click.echo(_summary(client.rotate_secret(name, value, tenant), "rotated"))


@secret_group.command("delete", cls=OperatorCommand)
@click.argument("name")
@click.option("--tenant", default="", help="Tenant (default: your own).")
@context_option
def delete_cmd(name: str, tenant: str, context_name: str | None) -> None:
    """Delete secret NAME (refused while an application uses it)."""
    with connect(context_name) as client:
        click.echo(_summary(client.delete_secret(name, tenant), "deleted"))


@secret_group.command("list", cls=OperatorCommand)
@click.option("--tenant", default="", help="Only this tenant (default: all you may see).")
@click.option("-o", "--output", "fmt", type=OutputFormat(_FORMATS), default="table")
@context_option
def list_cmd(tenant: str, fmt: str, context_name: str | None) -> None:
    """Names, versions and fingerprints of the secrets you may see."""
    with connect(context_name) as client:
        records = client.list_secrets(tenant)
    out = render(records, _columns(), fmt, kind="secret")
    if out:
        click.echo(out)


@secret_group.command("describe", cls=OperatorCommand)
@click.argument("name")
@click.option("--tenant", default="", help="Tenant (default: your own).")
@context_option
def describe_cmd(name: str, tenant: str, context_name: str | None) -> None:
    """Version, fingerprint, and which services use NAME on which nodes."""
    with connect(context_name) as client:
        info = client.describe_secret(name, tenant)
    click.echo(f"Name:         {info.tenant}/{info.name}")
    click.echo(f"Version:      {info.version}")
    click.echo(f"Fingerprint:  {info.fingerprint}")
    click.echo(f"Created:      {age(info.created_at)} ago")
    click.echo(f"Updated:      {age(info.updated_at)} ago")
    click.echo("Used by:" + ("" if info.used_by else "      nothing"))
    for use in info.used_by:
        nodes = ", ".join(use.nodes) or "no node yet"
        click.echo(f"  {use.app}/{use.service} on {nodes}")
