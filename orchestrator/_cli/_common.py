"""What every operator command shares: the error boundary, ``--context``, durations."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from orchestrator.client import ControlClient, exit_code
from orchestrator.context import ENV_CONTEXT, Context, ContextConfig
from pki.duration import parse_duration
from pki.errors import CapstanError

F = TypeVar("F", bound=Callable[..., Any])


class OperatorCommand(click.Command):
    """The one place an operator command's CapstanError becomes an exit status
    (3 not found, 4 permission denied, 5 unavailable, 1 anything else): one
    ``error: ...`` line on stderr, then click's own exit with that status."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except CapstanError as exc:
            click.echo(f"error: {exc}", err=True)
            ctx.exit(exit_code(exc))


class OperatorGroup(click.Group):
    """A group whose subcommands are OperatorCommands."""

    command_class = OperatorCommand


def context_option(fn: F) -> F:
    """``--context NAME`` (or $CAPSTAN_CONTEXT), passed on as ``context_name``."""
    return click.option(
        "--context",
        "context_name",
        metavar="NAME",
        help=f"Context to use (default: ${ENV_CONTEXT}, else the current context).",
    )(fn)


def chosen_context(name: str | None) -> str | None:
    """``--context`` after the subcommand, else the one before it (``capstan --context
    prod get nodes``); None leaves the choice to $CAPSTAN_CONTEXT and current-context."""
    if name:
        return name
    from orchestrator.cli import GLOBAL_CONTEXT

    ctx = click.get_current_context(silent=True)
    value = ctx.meta.get(GLOBAL_CONTEXT) if ctx is not None else None
    return value if isinstance(value, str) else None


def resolve_context(name: str | None) -> Context:
    return ContextConfig.load().resolve(chosen_context(name))


class AmbiguousApp(CapstanError):
    """An application name found in several tenants, and no --tenant."""


def app_tenant(client: ControlClient, app: str, tenant: str) -> str:
    """The tenant of application ``app``: ``tenant`` when given, else the one tenant among
    those the caller may see that has an application of that name ("" when none has:
    the orchestrator then answers for the caller's own or the default tenant)."""
    if tenant:
        return tenant
    tenants = sorted({a.tenant for a in client.list_apps() if a.name == app})
    if len(tenants) > 1:
        raise AmbiguousApp(
            f"application {app!r} exists in tenants {', '.join(tenants)}: give --tenant"
        )
    return tenants[0] if tenants else ""


def connect(name: str | None) -> ControlClient:
    """A client of the orchestrator named by the chosen context."""
    return ControlClient(resolve_context(name))


class Duration(click.ParamType):  # type: ignore[type-arg,unused-ignore]
    """``90s``, ``15m``, ``2h``; a bad value is a usage error (exit 2)."""

    name = "duration"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        if isinstance(value, int | float):
            return float(value)
        try:
            return parse_duration(str(value))
        except CapstanError as exc:
            self.fail(str(exc), param, ctx)


DURATION = Duration()


def key_values(
    _ctx: click.Context, param: click.Parameter, items: tuple[str, ...]
) -> dict[str, str]:
    """A click callback: repeated KEY=VALUE options as a mapping (checked before any call)."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"must be KEY=VALUE, got {item!r}", param=param)
        out[key] = value
    return out
