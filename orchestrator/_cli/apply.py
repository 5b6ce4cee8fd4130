"""``capstan apply`` and ``capstan delete``.

``apply`` parses the topology file locally first: a wrong file is reported (field
and line) and nothing is sent. With ``--wait`` (the default) it then polls
ListWorkloads and prints a line per service whenever its count changes
(``web 2/3 running``) until every service runs its desired replicas at the applied
spec, or ``--timeout`` passes (exit 1, with each unfinished instance's message).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import click

from orchestrator._cli._common import DURATION, OperatorCommand, connect, context_option
from orchestrator.client import ControlClient
from orchestrator.topology import load_topology_file
from pki.errors import CapstanError
from protos import control_pb2 as cpb

POLL_INTERVAL = 0.25


class WaitTimeout(CapstanError):
    """The application did not converge within --timeout."""


@dataclass(frozen=True)
class ServiceProgress:
    service: str
    desired: int
    running: int  # instances running the applied spec
    extra: int  # instances still to be removed (scale down, old spec, deleted service)
    problems: tuple[str, ...]  # "web.2: unschedulable (...)"

    @property
    def done(self) -> bool:
        return self.running >= self.desired and self.extra == 0

    def line(self) -> str:
        text = f"{self.service} {self.running}/{self.desired} running"
        if self.extra:
            text += f", {self.extra} to remove"
        return text


def progress(
    changes: Sequence[cpb.ServiceChange], workloads: Sequence[cpb.Workload]
) -> list[ServiceProgress]:
    """Each changed service's convergence, judged from the reported workloads alone."""
    out: list[ServiceProgress] = []
    for change in changes:
        mine = [w for w in workloads if w.service == change.service]
        desired = 0 if change.action == "delete" else change.replicas
        wanted = [w for w in mine if w.desired == "running"]
        current = [w for w in wanted if _current(w, change)]
        running = sum(1 for w in current if w.state == "running")
        extra = sum(1 for w in mine if w not in current and w.state not in ("removed",))
        extra += max(0, len(current) - desired)
        problems = tuple(
            f"{w.service}.{w.index}: {w.state}: {' '.join(w.message.split())}"
            for w in mine
            if w.message and w.state not in ("running", "removed")
        )
        out.append(ServiceProgress(change.service, desired, running, extra, problems))
    return out


def _current(w: cpb.Workload, change: cpb.ServiceChange) -> bool:
    # Without hashes on either side, any instance desired running counts.
    return not change.spec_hash or not w.spec_hash or w.spec_hash == change.spec_hash


def wait_converged(
    client: ControlClient,
    reply: cpb.ApplyResponse,
    *,
    timeout: float,
    echo: Callable[[str], None],
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    deadline = clock() + timeout
    last: dict[str, str] = {}
    seen: set[str] = set()
    while True:
        workloads = client.list_workloads(tenant=reply.tenant, app=reply.app)
        states = progress(reply.changes, workloads)
        for p in states:
            if last.get(p.service) != p.line():
                echo(p.line())
                last[p.service] = p.line()
            for problem in p.problems:
                if problem not in seen:  # each distinct refusal once, as it appears
                    seen.add(problem)
                    echo(f"  {problem}")
        if all(p.done for p in states):
            return
        if clock() >= deadline:
            problems = [m for p in states if not p.done for m in p.problems]
            detail = ("; " + "; ".join(problems[:5])) if problems else ""
            unfinished = ", ".join(p.line() for p in states if not p.done)
            raise WaitTimeout(f"not converged after {timeout:g}s: {unfinished}{detail}")
        sleep(POLL_INTERVAL)


@click.command("apply", cls=OperatorCommand)
@click.option(
    "-f",
    "--filename",
    "path",
    required=True,
    type=click.Path(path_type=Path),
    help="Topology file (YAML, apiVersion capstan/v1).",
)
@click.option("--dry-run", is_flag=True, help="Show what would change; change nothing.")
@click.option(
    "--wait/--no-wait",
    default=True,
    show_default=True,
    help="Follow progress until every service runs its replicas.",
)
@click.option(
    "--timeout",
    type=DURATION,
    default="120s",
    show_default=True,
    help="How long --wait waits, e.g. 90s, 5m.",
)
@context_option
def apply_cmd(
    path: Path, dry_run: bool, wait: bool, timeout: float, context_name: str | None
) -> None:
    """Create or update an application from a topology file."""
    app = load_topology_file(path)  # a wrong file stops here: nothing is sent
    with connect(context_name) as client:
        reply = client.apply(app, dry_run=dry_run)
        suffix = " (dry run: nothing changed)" if dry_run else ""
        click.echo(f"{reply.tenant}/{reply.app} generation {reply.generation}{suffix}")
        for change in reply.changes:
            click.echo(f"  {change.service}: {change.action} (replicas {change.replicas})")
        if wait and not dry_run:
            wait_converged(client, reply, timeout=timeout, echo=click.echo)
            click.echo(f"{reply.tenant}/{reply.app} is running")


@click.command("delete", cls=OperatorCommand)
@click.argument("kind", type=click.Choice(["app", "apps", "application"]))
@click.argument("name")
@click.option("--tenant", default="", help="Tenant of the application (default: yours).")
@context_option
def delete_cmd(kind: str, name: str, tenant: str, context_name: str | None) -> None:
    """Delete an application: its instances are stopped and removed."""
    del kind  # only applications can be deleted; the word is there for kubectl habits
    with connect(context_name) as client:
        reply = client.delete_app(name, tenant)
    click.echo(f"{reply.tenant or tenant or 'default'}/{reply.app or name} deleted")
