"""A joined node at work: NodeService served from the state directory, the Report stream,
the runner of the orchestrator's tasks and, for a node joined in pull mode, the puller."""

from __future__ import annotations

import datetime
import functools
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import grpc

from node.config import NodeConfig
from node.join import Joined, StateFiles, load_joined
from node.puller import Puller
from node.reconnect import Backoff
from node.renewal import Renewer, credentials_for_token, gateway_channel, own_credentials, recover
from node.reporter import Reporter
from node.runtime.base import Runtime
from node.server import NodeAgent, build_agent
from node.tasks import TaskRunner
from node.volumes import VolumeStore
from pki.certs import load_pem_chain
from pki.errors import CertificateError, ConfigError
from pki.files import read_file
from protos import gateway_pb2
from protos.wire.leader import Endpoints

log = logging.getLogger("capstan.node")

__all__ = ["JoinedNode", "run_joined_node"]


@dataclass
class JoinedNode:
    joined: Joined
    agent: NodeAgent
    reporter: Reporter
    tasks: TaskRunner
    puller: Puller | None = None  # only in pull mode
    renewer: Renewer | None = None  # renews the node certificate (node/renewal.py)

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
        """Stop pulling, tasks and reporting, then serving. Workloads keep running (a
        restart re-attaches)."""
        if self.renewer is not None:
            self.renewer.stop()
        if self.puller is not None:
            self.puller.stop()
        self.tasks.stop()
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
    """Serve NodeService from a joined state directory, start reporting and running the
    orchestrator's tasks, and, for a node joined in pull mode, start pulling.

    ``runtime_kind`` and ``listen`` may only repeat what the node joined with (port 0
    meaning the joined port): the orchestrator knows the node by them. ``runtime``
    injects a ready runtime (tests); ``on_tasks`` replaces the node's own task runner
    as the receiver of the tasks sent down the Report stream (tests hand them on to
    ``JoinedNode.tasks.submit`` themselves). Returns once the agent listens and the
    reporter runs; ``JoinedNode.stop()`` ends everything.
    """
    joined = load_joined(Path(state_dir))
    if joined is None:
        raise ConfigError(f"{state_dir} holds no joined node; join with a token first")
    joined.check_overrides(listen=listen, runtime=runtime_kind)
    files = joined.files
    recover(files.cert, files.key)  # a renewal a crash interrupted
    _check_certificate(files.cert, clock())
    config = NodeConfig.load(files.config)
    agent = build_agent(config, runtime=runtime, clock=clock, max_workers=max_workers)
    if agent.node_id != joined.node_id:
        agent.stop(0)
        raise ConfigError(
            f"node certificate {files.cert} is for {agent.node_id}, "
            f"but {files.joined} records {joined.node_id}"
        )
    volumes = VolumeStore(config.state_dir / "volumes")  # the directory NodeService uses
    # The gateway joined through first, then every other orchestrator (HA).
    gateways = Endpoints([joined.gateway_address, *joined.gateway_addresses])
    pokes: list[Callable[[], None]] = []

    def poke_reporter() -> None:
        for poke in pokes:
            poke()

    tasks = TaskRunner(
        agent.runtime,
        volumes,
        own_credentials=functools.partial(_own_credentials, files),
        gateway_channel=functools.partial(_gateway_channel, files, gateways),
        node_id=joined.node_id,
        spool_dir=config.state_dir / "spool",
        on_image=poke_reporter,
        clock=clock,
    )
    tasks.credentials_for = functools.partial(
        credentials_for_token, files.cert, files.key, files.ca
    )
    reporter: Reporter | None = None
    puller: Puller | None = None
    renewer: Renewer | None = None
    try:
        reporter = Reporter(
            agent.runtime,
            gateway_address=gateways,
            cert=files.cert,
            key=files.key,
            ca=files.ca,
            jwks=files.jwks,
            deny_list=files.deny_list,
            interval=joined.heartbeat_interval,
            backoff=backoff or Backoff(),
            on_tasks=on_tasks or tasks.submit,
            on_links=agent.links.set_plan,
            clock=clock,
            rng=rng,
        )
        pokes.append(reporter.poke)
        # Each heartbeat's listing: secret files of instances gone (fenced, removed) go.
        reporter.on_listed = agent.secrets.prune
        reporter.on_revoked = agent.secrets.wipe
        renewer = Renewer(
            cert=files.cert,
            key=files.key,
            ca=files.ca,
            gateway_address=gateways,
            on_renewed=reporter.reconnect,  # the orchestrator learns the new certificate
            clock=clock,
            rng=rng,
        )
        reporter.on_renew = renewer.renew_now
        reporter.start()
        renewer.start()
        if joined.mode == "pull":
            puller = Puller(
                agent.runtime,
                volumes,
                gateway_address=gateways,
                cert=files.cert,
                key=files.key,
                ca=files.ca,
                node_name=joined.name,
                interval=joined.heartbeat_interval,
                clock=clock,
                backoff=backoff or Backoff(),
                on_change=reporter.poke,
                rng=rng,
                epochs=agent.authorizer.epochs,
                secrets=agent.secrets,
            )
            puller.start()
    except BaseException:
        if renewer is not None:
            renewer.stop()
        if puller is not None:
            puller.stop()
        if reporter is not None:
            reporter.stop()
        tasks.stop()
        agent.stop(0)
        raise
    return JoinedNode(joined, agent, reporter, tasks, puller, renewer)


def _own_credentials(files: StateFiles) -> grpc.ChannelCredentials:
    """The node's current certificate, read again each time (it may have been renewed)."""
    return own_credentials(files.cert, files.key, files.ca)


def _gateway_channel(files: StateFiles, gateways: Endpoints) -> grpc.Channel:
    return gateway_channel(gateways.current(), _own_credentials(files), files.cert)
