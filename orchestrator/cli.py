"""The ``capstan`` command: one root group; each package contributes its own commands."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable

import click

from pki.errors import CapstanError

GLOBAL_CONTEXT = "capstan.context"


class LazyGroup(click.Group):
    """A group whose commands are imported when first named (``lazy``: name ->
    ``"module:attribute"``); ``on_load`` hooks run after each such import."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.lazy: dict[str, str] = {}
        self.on_load: list[Callable[[LazyGroup, str], None]] = []

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self.commands, *self.lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in self.lazy:
            module, _, attribute = self.lazy[cmd_name].partition(":")
            command = getattr(importlib.import_module(module), attribute)
            self.add_command(command, cmd_name)
            for hook in self.on_load:
                hook(self, cmd_name)
        return self.commands.get(cmd_name)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="capstan")
@click.option(
    "--context",
    "context_name",
    metavar="NAME",
    help="Context for every operator command (before or after the subcommand).",
)
@click.pass_context
def cli(ctx: click.Context, context_name: str | None) -> None:
    """Capstan: a container orchestrator for hosts that may be compromised."""
    # meta is shared by every nested click context: subcommands find it there.
    if context_name:
        ctx.meta[GLOBAL_CONTEXT] = context_name


def _register() -> None:
    # Each command is imported when it is used: importing orchestrator.cli stays
    # cheap, and so does starting any one command.
    from orchestrator._cli import register

    assert isinstance(cli, LazyGroup)  # noqa: S101 - made so just above
    cli.lazy.update(
        {"pki": "pki.cli:pki_group", "token": "pki.cli:token_group", "node": "node.cli:node_group"}
    )
    register(cli)


def main(argv: list[str] | None = None) -> int:
    """Entry point: map every CapstanError to a one-line message and a non-zero exit."""
    _register()
    try:
        # Without standalone mode click returns ctx.exit()'s status instead of raising.
        status = cli.main(args=argv, prog_name="capstan", standalone_mode=False)
        if isinstance(status, int):
            return status
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.Abort:
        click.echo("aborted", err=True)
        return 130
    except CapstanError as exc:
        click.echo(f"error: {exc}", err=True)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
