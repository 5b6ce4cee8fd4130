"""Progress while a command waits: a live spinner line on a terminal (rich), the same
messages as plain lines otherwise (pipes, logs, tests), so scripts see every step."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator

Report = Callable[[str], None]


def _interactive() -> bool:
    return sys.stdout.isatty()


@contextlib.contextmanager
def progress_reporter(title: str, *, echo: Report) -> Iterator[Report]:
    """Yield ``report(message)``. On a terminal, rich shows ``title: message`` with a
    spinner and each message also stays printed above it; else ``echo(message)``."""
    if not _interactive():
        yield echo
        return
    from rich.console import Console

    console = Console()
    with console.status(f"{title}...") as status:

        def report(message: str) -> None:
            status.update(f"{title}: {message}")
            console.print(message, highlight=False, markup=False)

        yield report
