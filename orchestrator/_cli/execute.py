"""``capstan exec APP/INSTANCE -- CMD...``: a command in a running instance.

The orchestrator only authorizes and audits: ControlService.Exec records the command
line (never its output) and returns a grant -- the node's address, the container and
a single-use token for the user's own certificate, bound to exactly this command. The
CLI then runs it on the node itself, like ``logs``. The session ends with the command,
or when the token's lifetime ends, or when the user's certificate is revoked.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator

import click

from orchestrator._cli._common import (
    DURATION,
    OperatorCommand,
    app_tenant,
    connect,
    context_option,
)
from orchestrator._cli.logs import parse_target
from pki.errors import CapstanError


class SessionEnded(CapstanError):
    """The exec session ended before the command did (grant over, revoked, node gone)."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.code = code


def _stdin_chunks() -> Iterator[bytes]:
    fd = sys.stdin.fileno()
    while True:
        try:
            data = os.read(fd, 32 * 1024)
        except OSError:
            return
        if not data:
            return
        yield data


@contextlib.contextmanager
def _raw_terminal(enabled: bool) -> Iterator[None]:
    """The local terminal in raw mode while a remote tty runs (keys go through as typed)."""
    if not enabled or not sys.stdin.isatty():
        yield
        return
    import termios
    import tty

    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    try:
        tty.setraw(fd)
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


@click.command("exec", cls=OperatorCommand, context_settings={"ignore_unknown_options": False})
@click.argument("target", metavar="APP/INSTANCE")
@click.argument("command", nargs=-1, required=True, metavar="-- CMD [ARG]...")
@click.option("-i", "--stdin", "interactive", is_flag=True, help="Pass your input to CMD.")
@click.option("-t", "--tty", is_flag=True, help="Give CMD a terminal (stdout and stderr merged).")
@click.option(
    "--tenant", default="", help="Tenant of the application (default: the one that has it)."
)
@click.option(
    "--timeout",
    type=DURATION,
    default="300s",
    show_default=True,
    help="How long the session may last (the token's lifetime, at most 300s).",
)
@context_option
def exec_cmd(
    target: str,
    command: tuple[str, ...],
    interactive: bool,
    tty: bool,
    tenant: str,
    timeout: float,
    context_name: str | None,
) -> None:
    """Run CMD in a running instance, e.g. `capstan exec shop/web.0 -- ls /`, or
    `capstan exec -it shop/web.0 -- sh`. Exits with CMD's exit code."""
    app, inst = parse_target(target)
    argv = list(command)
    with connect(context_name) as client:
        chosen = app_tenant(client, app, tenant)
        grant = client.exec_grant(
            app, inst, argv, tenant=chosen, tty=tty, stdin=interactive, ttl=timeout
        )
        out, err = sys.stdout.buffer, sys.stderr.buffer
        exit_code: int | None = None
        try:
            with _raw_terminal(tty and interactive):
                for message in client.exec_session(
                    grant, argv, _stdin_chunks(), tty=tty, stdin=interactive
                ):
                    if message.stdout:
                        out.write(message.stdout)
                        out.flush()
                    if message.stderr:
                        err.write(message.stderr)
                        err.flush()
                    if message.exited:
                        exit_code = message.exit_code
        except CapstanError as exc:
            code: object = getattr(exc, "code", None)
            name = str(getattr(code, "name", None) or code or "UNKNOWN")
            raise SessionEnded(f"exec session ended: {exc}", name) from None
        if exit_code is None:
            raise SessionEnded("exec session ended before the command did", "UNAVAILABLE")
    click.get_current_context().exit(exit_code)
