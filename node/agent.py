"""A joined node at work: NodeService served from the state directory, plus the Report stream."""

from __future__ import annotations

import datetime
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from node.config import NodeConfig
from node.join import Joined, load_joined
from node.reporter import Backoff, Reporter
from node.runtime.base import Runtime
from node.server import NodeAgent, build_agent
from pki._files import read_file
from pki.certs import load_pem_chain
from pki.errors import CertificateError, ConfigError
from protos import gateway_pb2

log = logging.getLogger("capstan.node")

__all__ = ["JoinedNode", "run_joined_node"]


@dataclass
class JoinedNode:
    joined: Joined
    agent: NodeAgent
    reporter: Reporter

    @property
    def node_id(self) -> str:
        return self.agent.node_id

    @property
    def port(self) -> int:
        return self.agent.port

    @property
    def host(self) -> str:
        return self.joined.listen.rpartition(":")[0]

    @property
    def listening(self) -> str:
        """HOST:PORT the agent serves on (the port actually bound)."""
        return f"{self.host}:{self.agent.port}"

    def stop(self, grace: float | None = 1.0) -> None:
        """Stop reporting, then serving. Workloads keep running (a restart re-attaches)."""
        self.reporter.stop()
        self.agent.stop(grace)


def _check_certificate(path: Path, now: float) -> None:
    try:
        leaf = load_pem_chain(read_file(path, "node certificate"), f"node certificate {path}")[0]
    except CertificateError as exc:
        raise ConfigError(str(exc)) from None
    expiry = leaf.not_valid_after_utc
    if now > expiry.timestamp():
        raise ConfigError(
            f"node certificate {path} expired at {expiry.isoformat()}; the node must join "
            "again with a new token (from an empty state directory)"
        )
    if now < leaf.not_valid_before_utc.timestamp():
        start = leaf.not_valid_before_utc.isoformat()
        raise ConfigError(f"node certificate {path} is not valid before {start}")
    remaining = datetime.timedelta(seconds=int(expiry.timestamp() - now))
    log.info("node certificate valid for another %s", remaining)


def run_joined_node(
    state_dir: Path,
    *,
    runtime_kind: str | None = None,
    listen: str | None = None,
    runtime: Runtime | None = None,
    clock: Callable[[], float] = time.time,
    max_workers: int = 32,
    backoff: Backoff | None = None,
    rng: random.Random | None = None,
    on_tasks: Callable[[list[gateway_pb2.Task]], None] | None = None,
) -> JoinedNode:
    """Serve NodeService from a joined state directory and start reporting.

    ``runtime_kind`` and ``listen`` may only repeat what the node joined with (port 0
    meaning the joined port): the orchestrator knows the node by them. ``runtime``
    injects a ready runtime (tests); ``on_tasks`` receives the tasks the orchestrator
    sends down the Report stream (see ``Reporter``). Returns once the agent listens and the reporter
    runs; ``JoinedNode.stop()`` ends both.
    """
    joined = load_joined(Path(state_dir))
    if joined is None:
        raise ConfigError(f"{state_dir} holds no joined node; join with a token first")
    joined.check_overrides(listen=listen, runtime=runtime_kind)
    files = joined.files
    _check_certificate(files.cert, clock())
    config = NodeConfig.load(files.config)
    agent = build_agent(config, runtime=runtime, clock=clock, max_workers=max_workers)
    if agent.node_id != joined.node_id:
        agent.stop(0)
        raise ConfigError(
            f"node certificate {files.cert} is for {agent.node_id}, "
            f"but {files.joined} records {joined.node_id}"
        )
    try:
        reporter = Reporter(
            agent.runtime,
            gateway_address=joined.gateway_address,
            cert=files.cert,
            key=files.key,
            ca=files.ca,
            jwks=files.jwks,
            deny_list=files.deny_list,
            interval=joined.heartbeat_interval,
            backoff=backoff or Backoff(),
            on_tasks=on_tasks,
            clock=clock,
            rng=rng,
        )
        reporter.start()
    except BaseException:
        agent.stop(0)
        raise
    return JoinedNode(joined, agent, reporter)
