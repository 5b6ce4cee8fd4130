"""The operator's commands, one module per family; ``register`` adds them to the root."""

from __future__ import annotations

import click


def register(root: click.Group) -> None:
    from orchestrator._cli.apply import apply_cmd, delete_cmd
    from orchestrator._cli.audit import audit_group
    from orchestrator._cli.context import context_group
    from orchestrator._cli.day2 import (
        completion_cmd,
        events_cmd,
        scale_cmd,
        top_cmd,
        version_cmd,
    )
    from orchestrator._cli.execute import exec_cmd
    from orchestrator._cli.get import describe_cmd, get_cmd
    from orchestrator._cli.local import down_cmd, status_cmd, up_cmd
    from orchestrator._cli.logs import logs_cmd
    from orchestrator._cli.nodes import cordon_cmd, drain_cmd, image_group, uncordon_cmd
    from orchestrator._cli.pki_lifecycle import register_lifecycle
    from orchestrator._cli.pool import pool_group, quota_group
    from orchestrator._cli.rebalance import rebalance_cmd
    from orchestrator._cli.run import run_cmd
    from orchestrator._cli.secret import secret_group
    from orchestrator._cli.serve import orchestrator_group

    register_lifecycle(root)
    for command in (
        apply_cmd,
        get_cmd,
        describe_cmd,
        logs_cmd,
        exec_cmd,
        delete_cmd,
        cordon_cmd,
        uncordon_cmd,
        drain_cmd,
        rebalance_cmd,
        up_cmd,
        down_cmd,
        status_cmd,
        run_cmd,
        context_group,
        orchestrator_group,
        audit_group,
        scale_cmd,
        top_cmd,
        events_cmd,
        version_cmd,
        completion_cmd,
        image_group,
        secret_group,
        pool_group,
        quota_group,
    ):
        root.add_command(command)
