"""``capstan apply`` and ``capstan delete``.

``apply`` parses the topology file locally first: a wrong file is reported (field
and line) and nothing is sent. With ``--wait`` (the default) it then polls
ListWorkloads and prints a line per service whenever its count changes
(``web 2/3 running``) until every service runs its desired replicas at the applied
spec, or ``--timeout`` passes (exit 1, with each unfinished instance's message).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import click

from orchestrator._cli._common import (
    DURATION,
    OperatorCommand,
    app_tenant,
    connect,
    context_option,
)
from orchestrator._cli._progress import progress_reporter
from orchestrator.client import ControlClient, ControlError
from orchestrator.topology import load_topology_file
from pki.errors import CapstanError
from protos import control_pb2 as cpb
from protos import topology_pb2 as tpb

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


def load_sources(sources: Sequence[str]) -> list[tuple[str, tpb.Application]]:
    """Every topology named by ``-f``: a file, ``-`` (stdin), or a directory (its
    ``*.yaml``/``*.yml`` files, sorted). All are parsed before anything is sent: one
    wrong file stops the command with every file's problems."""
    import sys

    from orchestrator.topology import load_topology

    out: list[tuple[str, tpb.Application]] = []
    problems: list[str] = []
    for source in sources:
        if source == "-":
            paths: list[Path | None] = [None]
        else:
            path = Path(source)
            if path.is_dir():
                paths = [
                    p
                    for p in sorted(path.iterdir())
                    if p.suffix in (".yaml", ".yml") and p.is_file()
                ]
                if not paths:
                    problems.append(f"{path}: no .yaml or .yml file in this directory")
            else:
                paths = [path]
        for p in paths:
            try:
                if p is None:
                    app = load_topology(sys.stdin.read(), source="<stdin>")
                else:
                    app = load_topology_file(p)
            except CapstanError as exc:
                problems.append(str(exc))
                continue
            out.append(("<stdin>" if p is None else str(p), app))
    if problems:
        raise TopologyFiles("\n".join(problems))
    seen: dict[tuple[str, str], str] = {}
    for where, app in out:
        key = (app.tenant, app.name)
        if key in seen:
            raise TopologyFiles(
                f"{where}: application {app.tenant or 'default'}/{app.name} is also in {seen[key]}"
            )
        seen[key] = where
    return out


_FIELD_RE = re.compile(r"\bservices\.[a-z0-9-]+(?:\.[A-Za-z]+)?(?=[:\[ ])")


def _located(exc: ControlError, where: str) -> ControlError:
    """The orchestrator names a refused field (``services.web.network: ...``, as the
    pool policies and quotas do); give each such problem its file and line."""
    if exc.code not in ("INVALID_ARGUMENT", "RESOURCE_EXHAUSTED") or where == "<stdin>":
        return exc
    try:
        text = Path(where).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return exc
    from orchestrator._yaml_lines import line_of_path

    def locate(problem: str) -> str:
        match = _FIELD_RE.search(problem)
        line = line_of_path(text, match.group(0)) if match else None
        return f"{where}:{line}: {problem.strip()}" if line else problem.strip()

    details = "\n".join(locate(p) for p in exc.details.split("; "))
    return ControlError(exc.method, exc.code, details)


class TopologyFiles(CapstanError):
    """One or more topology files are wrong (each problem on its own line)."""


_file_option = click.option(
    "-f",
    "--filename",
    "sources",
    required=True,
    multiple=True,
    metavar="FILE|DIR|-",
    help="Topology file (YAML, apiVersion capstan/v1), a directory of them, or - for stdin.",
)


@click.command("apply", cls=OperatorCommand)
@_file_option
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
    sources: tuple[str, ...], dry_run: bool, wait: bool, timeout: float, context_name: str | None
) -> None:
    """Create or update applications from topology files (-f FILE, -f DIR, -f -)."""
    apps = load_sources(sources)  # a wrong file stops here: nothing is sent
    with connect(context_name) as client:
        replies = []
        for where, app in apps:
            try:
                reply = client.apply(app, dry_run=dry_run)
            except ControlError as exc:
                raise _located(exc, where) from None
            suffix = " (dry run: nothing changed)" if dry_run else ""
            click.echo(f"{reply.tenant}/{reply.app} generation {reply.generation}{suffix}")
            for change in reply.changes:
                click.echo(f"  {change.service}: {change.action} (replicas {change.replicas})")
            replies.append(reply)
        if wait and not dry_run:
            for reply in replies:
                with progress_reporter(f"{reply.tenant}/{reply.app}", echo=click.echo) as report:
                    wait_converged(client, reply, timeout=timeout, echo=report)
                click.echo(f"{reply.tenant}/{reply.app} is running")


@click.command("delete", cls=OperatorCommand)
@click.argument("kind", required=False, type=click.Choice(["app", "apps", "application"]))
@click.argument("name", required=False)
@click.option(
    "-f",
    "--filename",
    "sources",
    multiple=True,
    metavar="FILE|DIR|-",
    help="Delete the applications these topology files describe.",
)
@click.option(
    "--tenant", default="", help="Tenant of the application (default: the one that has it)."
)
@context_option
def delete_cmd(
    kind: str | None,
    name: str | None,
    sources: tuple[str, ...],
    tenant: str,
    context_name: str | None,
) -> None:
    """Delete an application (`delete app NAME` or `delete -f FILE`): its instances are
    stopped and removed."""
    del kind  # only applications can be deleted; the word is there for kubectl habits
    if bool(name) == bool(sources):
        raise click.UsageError("give `app NAME` or -f FILE (one of them)")
    targets: list[tuple[str, str]]
    if sources:
        targets = [(app.name, app.tenant) for _, app in load_sources(sources)]
    else:
        assert name is not None  # noqa: S101 - checked just above
        targets = [(name, tenant)]
    with connect(context_name) as client:
        for app_name, app_tenant_name in targets:
            chosen = app_tenant(client, app_name, app_tenant_name)
            reply = client.delete_app(app_name, chosen)
            click.echo(f"{reply.tenant or chosen or 'default'}/{reply.app or app_name} deleted")
