"""``capstan audit``: read and check the orchestrator's hash-chained audit log."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path

import click

from orchestrator._cli._common import DURATION, OperatorGroup, connect, context_option
from orchestrator._cli._output import table
from pki.errors import CapstanError


class AuditBroken(CapstanError):
    """``audit verify`` found a changed, removed or reordered entry."""


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def format_entry(raw: str) -> str:
    """One line per entry: sequence, time, event, then the remaining fields."""
    entry = json.loads(raw)
    rest = {k: v for k, v in entry.items() if k not in ("seq", "at", "event", "prev")}
    fields = " ".join(
        f"{k}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in sorted(rest.items())
    )
    return f"{entry['seq']:>6} {_when(float(entry.get('at', 0)))} {entry['event']:<20} {fields}"


@click.group("audit", cls=OperatorGroup)
def audit_group() -> None:
    """The tamper-evident audit log: tokens minted, refusals, applies, joins."""


@audit_group.command("tail")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new entries.")
@click.option(
    "-n",
    "--lines",
    type=click.IntRange(min=0),
    default=20,
    show_default=True,
    help="Show the last N (0: all).",
)
@click.option(
    "--event",
    "events",
    multiple=True,
    help="Only entries of this event (repeatable), e.g. delegation.issued.",
)
@click.option(
    "-o", "--output", type=click.Choice(("text", "json")), default="text", show_default=True
)
@context_option
def tail_cmd(
    follow: bool, lines: int, events: tuple[str, ...], output: str, context_name: str | None
) -> None:
    """Print the latest audit entries (admins and viewers)."""
    with connect(context_name) as client:
        limit = 0 if events else lines
        shown = []
        for entry in client.audit_tail(limit=limit, follow=False):
            if events and json.loads(entry.json)["event"] not in events:
                continue
            shown.append(entry)
        for entry in shown[-lines:] if lines else shown:
            click.echo(entry.json if output == "json" else format_entry(entry.json))
        if follow:
            since = (shown[-1].seq + 1) if shown else 0
            for entry in client.audit_tail(since=since, follow=True):
                if events and json.loads(entry.json)["event"] not in events:
                    continue
                click.echo(entry.json if output == "json" else format_entry(entry.json))


@audit_group.command("verify")
@context_option
def verify_cmd(context_name: str | None) -> None:
    """Check the whole hash chain; exit 1 naming the first bad entry."""
    with connect(context_name) as client:
        result = client.audit_verify()
    if not result.ok:
        raise AuditBroken(f"audit log tampered: {result.message}")
    click.echo(f"audit log intact: {result.message}")


@audit_group.command("who-can")
@click.argument("node")
@click.option(
    "--since", type=DURATION, default=None, help="Only the last DURATION (e.g. 24h). Default: all."
)
@context_option
def who_can_cmd(node: str, since: float | None, context_name: str | None) -> None:
    """Which identities held which operations on NODE (from the tokens minted)."""
    with connect(context_name) as client:
        reply = client.who_can(node, since=time.time() - since if since else 0.0)
    if not reply.capabilities:
        click.echo(f"no token was minted for {reply.node_id} in that window")
        return
    rows = [["IDENTITY", "OPERATION", "RESOURCE", "TOKENS", "FIRST", "LAST"]]
    for c in reply.capabilities:
        rows.append([c.identity, c.op, c.resource, str(c.tokens), _when(c.first), _when(c.last)])
    click.echo(f"capabilities on {reply.node_id}:")
    click.echo(table(rows))


@audit_group.command("report")
@click.option(
    "--html",
    "html_file",
    required=True,
    type=click.Path(path_type=Path, dir_okay=False),
    help="Write the report, one self-contained HTML page, to this file.",
)
@click.option(
    "--since", type=DURATION, default=None, help="Only the last DURATION (e.g. 24h). Default: all."
)
@context_option
def report_cmd(html_file: Path, since: float | None, context_name: str | None) -> None:
    """A reviewer's page: who could do what on which node (a graph, delegations node to
    node), refusals by reason, and the hash chain's verification (admins and viewers)."""
    from orchestrator._cli.report import build, render

    now = time.time()
    with connect(context_name) as client:
        entries = [json.loads(e.json) for e in client.audit_tail(limit=0)]
        verified = client.audit_verify()
        names = {n.id: n.name for n in client.list_nodes()}
    report = build(
        entries,
        node_names=names,
        chain_ok=verified.ok,
        chain_message=verified.message,
        since=now - since if since else 0.0,
    )
    page = render(report, generated=now)
    try:
        html_file.write_text(page, encoding="utf-8")
    except OSError as exc:
        raise CapstanError(f"cannot write {html_file}: {exc.strerror or exc}") from None
    click.echo(
        f"wrote {html_file}: {len(report.grants)} capabilities, {sum(report.delegations.values())} "
        f"delegations, {sum(report.refusals.values())} refusals; hash chain "
        + ("intact" if verified.ok else "BROKEN")
    )
    if not verified.ok:
        raise AuditBroken(f"audit log tampered: {verified.message}")
