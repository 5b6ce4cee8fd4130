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


# The node agent's own commands: they run for the node's whole life.
AGENT_COMMANDS = frozenset({("node", "serve"), ("node", "join")})


def _command_path(argv: list[str]) -> tuple[str, ...]:
    """The first two words of the command line after the root's own options."""
    words = iter(argv)
    for word in words:
        if word == "--context":
            next(words, None)
        elif word.startswith("-") and not word.startswith("--context="):
            return ()  # the root's help or version: every command
        elif not word.startswith("-"):
            return (word, next(words, ""))
    return ()


def _register(argv: list[str] | None = None) -> None:
    # Each command is imported when it is used: importing orchestrator.cli stays
    # cheap, and so does starting any one command.
    assert isinstance(cli, LazyGroup)  # noqa: S101 - made so just above
    cli.lazy.update(
        {"pki": "pki.cli:pki_group", "token": "pki.cli:token_group", "node": "node.cli:node_group"}
    )
    if _command_path(sys.argv[1:] if argv is None else argv) in AGENT_COMMANDS:
        # Not even the operator's commands added to the node group (node revoke): the
        # agent would hold their imports, a few MB of every node's resident memory
        # (docs/performance.md).
        return
    from orchestrator._cli import register

    register(cli)
    for name in list(cli.commands):  # groups an agent command loaded in this process
        for hook in cli.on_load:
            hook(cli, name)


def main(argv: list[str] | None = None) -> int:
    """Entry point: map every CapstanError to a one-line message and a non-zero exit."""
    _register(argv)
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
