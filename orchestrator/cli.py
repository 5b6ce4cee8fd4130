"""The ``capstan`` command: one root group; each package contributes its own commands."""

from __future__ import annotations

import sys

import click

from pki.errors import CapstanError

GLOBAL_CONTEXT = "capstan.context"


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
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
    # Imported on first use: importing orchestrator.cli alone stays cheap.
    from node.cli import node_group
    from orchestrator._cli import register
    from pki.cli import pki_group, token_group

    cli.add_command(pki_group)
    cli.add_command(token_group)
    cli.add_command(node_group)
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
