"""The node's own sandbox policy: what its instances may have beyond the defaults.

Given by the orchestrator at join (the join token's policy, else the node's pool's
at that moment) and kept in ``<state_dir>/policy.json``; a node that has none permits
nothing beyond the defaults. Both runtimes check every create against it, whatever
the capability token says: a token proves the orchestrator asked, not that what it
asked for is allowed here (a compromised orchestrator key must not turn a node's
workloads into root on its host network).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from node.errors import PolicyDenied, RuntimeFailure
from node.runtime.base import ContainerSpec
from protos import node_pb2
from protos.wire import rules

POLICY_FILE = "policy.json"


@dataclass(frozen=True)
class NodePolicy:
    host_network: bool = False
    root: bool = False
    cap_add: frozenset[str] = frozenset()
    low_ports: bool = False

    def check(self, spec: ContainerSpec) -> None:
        """Raise ``PolicyDenied`` naming the first field that asks for more."""
        if spec.network == "host" and not self.host_network:
            raise PolicyDenied("network", "host networking is not permitted on this node")
        ids = rules.parse_user(spec.user) if spec.user else None
        if ids is not None and 0 in ids and not self.root:
            raise PolicyDenied("user", "uid or gid 0 is not permitted on this node")
        for i, cap in enumerate(spec.cap_add):
            if cap not in self.cap_add:
                raise PolicyDenied(f"cap_add[{i}]", f"{cap} is not permitted on this node")
        if spec.low_ports and not self.low_ports:
            raise PolicyDenied("low_ports", "ports below 1024 are not permitted on this node")
        for i, port in enumerate(spec.ports):
            # The agent would listen on the node's own low port (node/links).
            if 0 < port.publish < rules.LOW_PORT and not self.low_ports:
                raise PolicyDenied(
                    f"ports[{i}].publish", "publishing below 1024 is not permitted on this node"
                )

    def to_json(self) -> bytes:
        doc = {"host_network": self.host_network, "root": self.root,
               "cap_add": sorted(self.cap_add), "low_ports": self.low_ports}
        return (json.dumps(doc, sort_keys=True) + "\n").encode()


def policy_from_pb(policy: node_pb2.SandboxPolicy) -> NodePolicy:
    return NodePolicy(
        host_network=policy.host_network,
        root=policy.root,
        cap_add=frozenset(policy.cap_add),
        low_ports=policy.low_ports,
    )


def load_policy(state_dir: Path) -> NodePolicy:
    path = Path(state_dir) / POLICY_FILE
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return NodePolicy()
    except (OSError, ValueError) as exc:
        raise RuntimeFailure(f"node policy {path}: {exc}") from None
    if not isinstance(doc, dict):
        raise RuntimeFailure(f"node policy {path} is malformed")
    caps = doc.get("cap_add", [])
    if not isinstance(caps, list) or not all(isinstance(c, str) for c in caps):
        raise RuntimeFailure(f"node policy {path}: cap_add is malformed")
    return NodePolicy(
        host_network=doc.get("host_network") is True,
        root=doc.get("root") is True,
        cap_add=frozenset(caps),
        low_ports=doc.get("low_ports") is True,
    )
