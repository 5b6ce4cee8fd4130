"""``capstan run -f FILE``: the topology on this host's runtime, without a cluster."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from types import FrameType

import click

from orchestrator._cli._common import OperatorCommand
from orchestrator.standalone import Standalone
from orchestrator.topology import load_topology_file

_RUNTIMES = ("auto", "docker", "process")


@click.command("run", cls=OperatorCommand)
@click.option(
    "-f",
    "--filename",
    "path",
    required=True,
    type=click.Path(path_type=Path),
    help="Topology file (the same one `capstan apply` takes).",
)
@click.option(
    "--runtime",
    type=click.Choice(_RUNTIMES),
    default="auto",
    show_default=True,
    help="Local runtime: docker when an engine answers, else process.",
)
@click.option("-d", "--detach", is_flag=True, help="Start the instances and return.")
@click.option("--down", is_flag=True, help="Remove the instances a previous run started.")
@click.option(
    "--logs/--no-logs",
    default=True,
    show_default=True,
    help="In the foreground, print every instance's output.",
)
@click.option(
    "--secret",
    "secret_files",
    multiple=True,
    metavar="NAME=FILE",
    help="The value of the file's secret NAME, read from FILE (repeat for each secret).",
)
def run_cmd(
    path: Path,
    runtime: str,
    detach: bool,
    down: bool,
    logs: bool,
    secret_files: tuple[str, ...],
) -> None:
    """Run an application on this host, no daemon. Ctrl-C removes it."""
    app = load_topology_file(path)
    secrets = _secret_values(secret_files)
    kind = None if runtime == "auto" else runtime
    lock = threading.Lock()

    def say(line: str) -> None:
        with lock:
            click.echo(line)

    with Standalone(app, runtime=kind, echo=say, secrets=secrets) as runner:
        if down:
            removed = runner.down()
            say(f"{app.name}: removed {len(removed)} instance{'s' if len(removed) != 1 else ''}")
            return
        try:
            started = runner.up()
        except BaseException:
            runner.down()
            raise
        say(f"{app.name}: {len(started)} instances on the {runner.runtime.name} runtime")
        if detach:
            if runner.serves_links:
                say("note: links and published ports are served only while capstan run runs")
            say(f"remove them with: capstan run --down -f {path}")
            return
        stop = threading.Event()
        stopped_by: list[int] = []

        def _stop(sig: int, _frame: FrameType | None) -> None:
            stopped_by.append(sig)
            stop.set()

        previous = {s: signal.signal(s, _stop) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            say("press Ctrl-C to stop and remove them")
            if logs:
                runner.follow_logs([s.name for s in started], say)
            runner.supervise(stop)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            removed = runner.down()
            say(f"{app.name}: removed {len(removed)} instances")
        if stopped_by:
            # Interrupted, as a shell reports it: 128 + the signal (130 for Ctrl-C).
            click.get_current_context().exit(128 + stopped_by[0])


def _secret_values(given: tuple[str, ...]) -> dict[str, bytes]:
    values: dict[str, bytes] = {}
    for item in given:
        name, sep, file = item.partition("=")
        if not sep or not name or not file:
            raise click.BadParameter(f"{item!r} is not NAME=FILE", param_hint="--secret")
        try:
            values[name] = Path(file).read_bytes()
        except OSError as exc:
            raise click.BadParameter(f"{file}: {exc.strerror}", param_hint="--secret") from None
    return values
