"""``capstan cordon|uncordon|drain NODE``."""

from __future__ import annotations

import time
from collections.abc import Callable

import click

from orchestrator._cli._common import DURATION, OperatorCommand, connect, context_option
from orchestrator._cli._output import node_schedule
from orchestrator._cli._progress import progress_reporter
from orchestrator.client import ControlClient
from pki.errors import CapstanError


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
@click.option("--wait", is_flag=True, help="Return only once nothing runs on NODE.")
@click.option(
    "--timeout", type=DURATION, default="300s", show_default=True, help="How long --wait waits."
)
@context_option
def drain_cmd(node: str, wait: bool, timeout: float, context_name: str | None) -> None:
    """Cordon NODE and move its workloads to other nodes."""
    with connect(context_name) as client:
        record = client.drain(node)
        left = record.workloads
        click.echo(
            f"node {record.name} {node_schedule(record)} "
            f"({left} workload{'s' if left != 1 else ''} left to move)"
        )
        if wait:
            wait_drained(client, node, timeout=timeout, echo=click.echo)


@click.group("image")
def image_group() -> None:
    """Images the orchestrator vouches for."""


@image_group.command("seed", cls=OperatorCommand)
@click.argument("node")
@click.argument("image")
@context_option
def image_seed_cmd(node: str, image: str, context_name: str | None) -> None:
    """Record that NODE holds IMAGE (NAME[:TAG]@sha256:<image id>), put there outside
    Capstan (admin). Other nodes may then fetch it from NODE, each copy checked
    against the digest, and applies that name IMAGE without a digest are pinned to it."""
    with connect(context_name) as client:
        reply = client.seed_image(node, image)
    click.echo(f"node {reply.node} holds {reply.image}")


class DrainTimeout(CapstanError):
    """drain --wait: workloads still on the node after --timeout."""


def wait_drained(
    client: ControlClient,
    node: str,
    *,
    timeout: float,
    echo: Callable[[str], None],
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Poll until no instance is left on ``node`` (removed ones aside), printing the
    count whenever it changes."""
    deadline = clock() + timeout
    last = -1
    with progress_reporter(f"draining {node}", echo=echo) as report:
        while True:
            left = [
                w
                for w in client.list_workloads(node=node)
                if w.state not in ("removed",) and not (w.desired == "removed" and not w.container)
            ]
            if len(left) != last:
                last = len(left)
                report(f"{node}: {last} instance{'s' if last != 1 else ''} left")
            if not left:
                break
            if clock() >= deadline:
                names = ", ".join(f"{w.app}/{w.service}.{w.index} ({w.state})" for w in left[:5])
                raise DrainTimeout(f"{node} not drained after {timeout:g}s: {names}")
            sleep(1.0)
    echo(f"node {node} drained")
