"""The operator's commands, one module per family; ``register`` adds them to the root.

Each command is named here with the module that holds it and imported only when it
is used: ``capstan apply`` imports what apply needs, not every command's
dependencies (start-up time is on the clock of every command, and of every
``apply --wait`` measured end to end).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from orchestrator.cli import LazyGroup

# command name -> "module:attribute"
COMMANDS: dict[str, str] = {
    "apply": "orchestrator._cli.apply:apply_cmd",
    "get": "orchestrator._cli.get:get_cmd",
    "describe": "orchestrator._cli.get:describe_cmd",
    "logs": "orchestrator._cli.logs:logs_cmd",
    "exec": "orchestrator._cli.execute:exec_cmd",
    "delete": "orchestrator._cli.apply:delete_cmd",
    "cordon": "orchestrator._cli.nodes:cordon_cmd",
    "uncordon": "orchestrator._cli.nodes:uncordon_cmd",
    "drain": "orchestrator._cli.nodes:drain_cmd",
    "rebalance": "orchestrator._cli.rebalance:rebalance_cmd",
    "up": "orchestrator._cli.local:up_cmd",
    "down": "orchestrator._cli.local:down_cmd",
    "status": "orchestrator._cli.local:status_cmd",
    "run": "orchestrator._cli.run:run_cmd",
    "context": "orchestrator._cli.context:context_group",
    "orchestrator": "orchestrator._cli.serve:orchestrator_group",
    "audit": "orchestrator._cli.audit:audit_group",
    "scale": "orchestrator._cli.day2:scale_cmd",
    "top": "orchestrator._cli.day2:top_cmd",
    "events": "orchestrator._cli.day2:events_cmd",
    "version": "orchestrator._cli.day2:version_cmd",
    "completion": "orchestrator._cli.day2:completion_cmd",
    "image": "orchestrator._cli.nodes:image_group",
    "secret": "orchestrator._cli.secret:secret_group",
    "pool": "orchestrator._cli.pool:pool_group",
    "quota": "orchestrator._cli.pool:quota_group",
}


def register(root: LazyGroup) -> None:
    root.lazy.update(COMMANDS)
    root.on_load.append(_lifecycle)


def _lifecycle(root: LazyGroup, name: str) -> None:
    # The certificate lifecycle commands live in the node and pki groups.
    if name in ("node", "pki"):
        from orchestrator._cli.pki_lifecycle import register_lifecycle

        register_lifecycle(root)
