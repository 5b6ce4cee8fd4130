"""A real cluster for lifecycle tests: an in-process orchestrator and two node agents
joined through the real join flow, node certificates of 60 s, and a load generator of
token-authorized calls (orchestrator -> node, and node -> node on the orchestrator's
leave) that counts every failure."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from node.renewal import credentials_for_token
from orchestrator.lifecycle import Lifecycle
from pki.authority import Authority
from protos import control_pb2, node_pb2
from protos.wire.nodeclient import NodeClient
from tests.control_api.conftest import Running, start_orchestrator, stop_orchestrator
from tests.security.conftest import Cluster, join_node
from tests.waiting import wait_for

NODE_TTL = 60.0

__all__ = ["NODE_TTL", "Load", "lifecycle_of", "refresh_admin", "wait_for"]


def lifecycle_of(c: Cluster) -> Lifecycle:
    lc = c.orch.orch.lifecycle
    assert lc is not None
    return lc


def refresh_admin(c: Cluster) -> None:
    """The test's own authority object signs admin certificates: re-open it after a CA
    rotation, as an operator re-issues their certificate."""
    c.orch.authority = Authority.open(c.orch.authority.directory)


@dataclass
class Load:
    """Calls in a loop on two threads until stopped; every failure is kept."""

    cluster: Cluster
    calls: int = 0
    failures: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def _push(self) -> None:
        """The orchestrator calls every node (its NodeCaller: one token per call)."""
        orch = self.cluster.orch
        caller = orch.orch.reconciler.caller
        while not self._stop.is_set():
            for node in orch.orch.state.all_nodes():
                if node.state == "revoked":
                    continue
                try:
                    orch.run(
                        caller.call(node.address, node.id, "node.info", node_pb2.NodeInfoRequest())
                    )
                    self.calls += 1
                except Exception as exc:
                    self.failures.append(f"orchestrator -> {node.name}: {exc}")

    def _delegated(self) -> None:
        """node-1 calls node-2 with a token minted for it, bound to the certificate the
        orchestrator knows it by (as a delegation is), presenting the pair bound."""
        orch = self.cluster.orch
        minter = orch.orch.reconciler.caller._minter
        tracker = orch.orch.reconciler.tracker
        crt, key, ca = self.cluster.node_files("node-1")
        while not self._stop.is_set():
            source = orch.orch.state.node("node-2")
            target = orch.orch.state.node("node-1")
            assert source is not None and target is not None
            token = str(
                orch.run(
                    minter.mint(
                        sub=target.id,
                        cnf=tracker.thumbprint("node-1"),
                        aud=source.id,
                        op="node.info",
                        res="*",
                        ttl=10.0,
                        why="lifecycle load",
                        audit=False,
                    )
                )
            )
            try:
                with NodeClient(
                    source.address,
                    credentials=credentials_for_token(crt, key, ca, token),
                    expect=source.id,
                ) as client:
                    client.call("node.info", node_pb2.NodeInfoRequest(), token, timeout=10)
                self.calls += 1
            except Exception as exc:
                self.failures.append(f"node-1 -> node-2: {exc}")

    def more(self, n: int, *, timeout: float = 60.0) -> None:
        """Wait until ``n`` more calls have succeeded. Load before and after an event is
        counted in calls, not in seconds: a slow machine takes longer, it does not fail."""
        target = self.calls + n
        wait_for(lambda: self.calls >= target, timeout=timeout, what=f"{n} more calls")

    def at_least(self, total: int, *, timeout: float = 60.0) -> None:
        """Wait until ``total`` calls have succeeded in all."""
        wait_for(lambda: self.calls >= total, timeout=timeout, what=f"{total} calls in all")

    def start(self) -> Load:
        for target in (self._push, self._delegated):
            t = threading.Thread(target=target, daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(30)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    orch: Running = start_orchestrator(tmp_path / "orch")
    lc = orch.orch.lifecycle
    assert lc is not None
    lc.settings.node_cert_ttl = NODE_TTL
    lc.settings.ack_timeout = 5.0
    c = Cluster(orch, tmp_path)
    try:
        join_node(c, "node-1", "127.0.0.31")
        join_node(c, "node-2", "127.0.0.32")

        def ready() -> bool:
            nodes = c.admin().ListNodes(control_pb2.ListNodesRequest()).nodes
            return len(nodes) == 2 and all(n.state == "ready" for n in nodes)

        wait_for(ready, what="two ready nodes")
        wait_for(
            lambda: all(orch.orch.reconciler.tracker.thumbprint(n) for n in ("node-1", "node-2")),
            what="both report streams",
        )
        yield c
    finally:
        for node in c.nodes.values():
            for ct in node.agent.runtime.list():
                node.agent.runtime.remove(ct.name, force=True)
            node.stop(0)
        stop_orchestrator(orch)


def audit_events(c: Cluster, event: str) -> list[dict[str, Any]]:
    return [e for e in c.audit() if e.get("event") == event]
