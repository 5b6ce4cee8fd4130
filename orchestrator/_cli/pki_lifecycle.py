"""Certificate lifecycle commands: ``capstan node revoke``, ``capstan pki status`` and
``capstan pki rotate-ca``, added to the ``node`` and ``pki`` groups."""

from __future__ import annotations

import datetime
import time
from pathlib import Path

import click

from orchestrator._cli._common import OperatorCommand, connect, context_option
from orchestrator._cli._output import table
from pki.authority import REVOCATION_REASONS
from pki.rotation import finish_rotation, in_use_under, rotate_ca, rotation_status


def _iso(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts, tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _left(seconds: float) -> str:
    if seconds <= 0:
        return "expired"
    if seconds < 3600:
        return f"{seconds / 60:.0f}m"
    if seconds < 3 * 86400:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.0f}d"


@click.command("revoke", cls=OperatorCommand)
@click.argument("node")
@click.option(
    "--reason",
    default="key-compromise",
    show_default=True,
    type=click.Choice(list(REVOCATION_REASONS)),
)
@context_option
def revoke_node_cmd(node: str, reason: str, context_name: str | None) -> None:
    """Revoke NODE's certificates: refused everywhere within seconds, workloads moved."""
    with connect(context_name) as client:
        record = client.revoke_node(node, reason)
    click.echo(f"node {record.name} revoked ({reason}); its workloads are being moved")


@click.command("status", cls=OperatorCommand)
@context_option
def status_cmd(context_name: str | None) -> None:
    """Per certificate in use: issuing CA, expiry, renewal state; warnings first."""
    with connect(context_name) as client:
        status = client.pki_status()
    now = time.time()
    for warning in status.warnings:
        click.echo(f"warning: {warning}", err=True)
    click.echo(f"signing CA:    {status.signing_ca[:16]}")
    click.echo(f"trusted roots: {', '.join(r[:16] for r in status.trusted_roots)}")
    if status.rotation:
        click.echo(f"CA rotation:   {status.rotation}")
    click.echo(f"token keys:    {'; '.join(status.token_keys) or '-'}")
    rows = [("KIND", "NAME", "SERIAL", "CA", "EXPIRES", "LEFT", "RENEWAL", "NODE")]
    for c in status.certificates:
        ca = c.issuer_ca[:16] + ("" if c.issuer_ca == status.signing_ca else " (old)")
        rows.append(
            (
                c.kind,
                c.name,
                c.serial[:16],
                ca,
                _iso(c.not_after),
                _left(c.not_after - now),
                c.renewal,
                c.node_state or "-",
            )
        )
    click.echo(table(rows))


@click.command("rotate-ca")
@click.option(
    "--dir",
    "directory",
    required=True,
    type=click.Path(path_type=Path, file_okay=False),
    help="PKI directory.",
)
@click.option("--finish", is_flag=True, help="Drop the old CA (refused while a leaf needs it).")
@click.option("--force", is_flag=True, help="With --finish: drop it even so.")
def rotate_ca_cmd(directory: Path, finish: bool, force: bool) -> None:
    """Start a CA rotation (new root and intermediate trusted beside the old), or finish it.

    A running orchestrator pushes the new trust bundle to every node, re-issues every
    node in batches and finishes the rotation itself once nothing depends on the old CA.
    """
    if finish:
        rotation = finish_rotation(directory, force=force)
        click.echo(f"old root {rotation.old_root[:16]} is no longer trusted")
        return
    rotation = rotate_ca(directory)
    click.echo(f"new root {rotation.new_root[:16]}, intermediate {rotation.new_intermediate[:16]}")
    click.echo("the trust bundle holds the old and the new root until the rotation finishes")
    if rotation.cross_signed:
        click.echo(
            f"{directory / 'intermediate-cross.crt'}: the new intermediate signed by the old "
            "root, for peers that hold only the old root"
        )
    waiting = in_use_under(directory, rotation.old_intermediate)
    click.echo(f"{len(waiting)} certificate(s) in use chain to the old CA")


@click.command("rotation")
@click.option(
    "--dir",
    "directory",
    required=True,
    type=click.Path(path_type=Path, file_okay=False),
    help="PKI directory.",
)
def rotation_cmd(directory: Path) -> None:
    """Show the CA rotation under way and the certificates still on the old CA."""
    rotation = rotation_status(directory)
    if rotation is None:
        click.echo("no CA rotation under way")
        return
    click.echo(f"rotation started {_iso(rotation.started)}")
    waiting = in_use_under(directory, rotation.old_intermediate)
    for rec in waiting:
        until = _iso(rec.not_after)
        click.echo(f"  {rec.kind.value}/{rec.name} serial {rec.serial:x} until {until}")
    click.echo(f"{len(waiting)} certificate(s) in use still chain to the old CA")


def register_lifecycle(root: click.Group) -> None:
    node = root.commands.get("node")
    if isinstance(node, click.Group):
        node.add_command(revoke_node_cmd)
    pki = root.commands.get("pki")
    if isinstance(pki, click.Group):
        pki.add_command(status_cmd)
        pki.add_command(rotate_ca_cmd)
        pki.add_command(rotation_cmd)
