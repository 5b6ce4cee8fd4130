"""Assembles and runs an orchestrator: store, state, audit, reconciler, ControlService
and NodeGateway on grpc.aio (one event loop holds every node stream), health and
reflection beside them.

Two ports: ``listen`` is mTLS for operators (ControlService) and joined nodes
(NodeGateway.Report); ``join_listen`` is TLS with server authentication only, for
nodes that have no certificate yet and present a one-time join token.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import grpc
import grpc.aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from orchestrator import metrics
from orchestrator._periodic import every
from orchestrator.audit import AuditLog
from orchestrator.authz import AuthorizationInterceptor, Gate
from orchestrator.autoscale import Autoscaler
from orchestrator.ca import CurrentAuthority
from orchestrator.carotation import CaRotation
from orchestrator.config import LifecycleSettings, OrchestratorConfig
from orchestrator.control import ControlService
from orchestrator.delegation import Delegator
from orchestrator.failover import LivenessWatch
from orchestrator.following import LeaderGate
from orchestrator.gateway import Gateway
from orchestrator.keyrotation import TokenKeyRotation
from orchestrator.leader import FencedStore, Leadership, orchestrators, run_as_leader
from orchestrator.lifecycle import Lifecycle
from orchestrator.links import LinkPlanner
from orchestrator.liveness import Tracker
from orchestrator.minter import Minter
from orchestrator.nodecalls import NodeCaller
from orchestrator.nodecerts import NodeCertificates
from orchestrator.owncert import OwnCertificate, SelfRenewal
from orchestrator.pkistatus import PkiStatus
from orchestrator.rebalance import Rebalancer
from orchestrator.reconciler import Reconciler
from orchestrator.revocations import RevokedSerials, Revoker
from orchestrator.secrets import SecretService
from orchestrator.state import ClusterState
from orchestrator.store import Store
from orchestrator.store.etcd import EtcdStore, EtcdTLS
from orchestrator.store.sqlite import SqliteStore
from orchestrator.streams import NodeStreams
from orchestrator.tasks import TaskBook
from orchestrator.trustpush import TrustPush
from pki.authority import Authority
from pki.errors import ConfigError
from pki.secretkeys import SecretKeyStore
from pki.tokenkeys import TokenKeyStore
from protos import (
    control_pb2,
    control_pb2_grpc,
    gateway_pb2,
    gateway_pb2_grpc,
    secrets_pb2,
    secrets_pb2_grpc,
)
from protos.wire.channel import ORCHESTRATOR_SERVER_OPTIONS
from protos.wire.grants import TICK
from protos.wire.metrics import serve_metrics
from protos.wire.reflection import enable_reflection

log = logging.getLogger("capstan.orchestrator")


@dataclass
class Orchestrator:
    config: OrchestratorConfig
    server: grpc.aio.Server
    store: FencedStore
    state: ClusterState
    reconciler: Reconciler
    gateway: Gateway
    audit: AuditLog
    identity: str
    port: int
    join_port: int
    tasks: list[asyncio.Task[None]]
    # Failure detection, automatic rebalancing and autoscaling (their settings may be
    # replaced while running: tests shorten windows).
    liveness: LivenessWatch | None = None
    rebalancer: Rebalancer | None = None
    autoscaler: Autoscaler | None = None
    lifecycle: Lifecycle | None = None
    leadership: Leadership | None = None
    secrets: SecretService | None = None
    # The leader's duties (reconciler, liveness, ...): running only while leading.
    duties: list[asyncio.Task[None]] = field(default_factory=list)
    # The authorization gate (orchestrator/authz.py): streams held per peer.
    authz: Gate | None = None
    # The open Report streams: what reaches a connected node goes through them.
    streams: NodeStreams = field(default_factory=NodeStreams)

    async def stop(self, grace: float = 1.0) -> None:
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self.server.stop(grace)
        await self.reconciler.caller.close()
        if self.leadership is not None:
            await self.leadership.resign()
        await self.store.close()


async def start(
    config: OrchestratorConfig, *, clock: Callable[[], float] = time.time
) -> Orchestrator:
    ca = CurrentAuthority(Authority.open(config.pki_dir))
    keys_path = config.pki_dir / "token-keys"
    token_keys = TokenKeyStore.open(keys_path)
    dns, ips = config.server_sans()
    own_cert = OwnCertificate(ca.authority, config.name, dns=dns, ips=ips, ttl=config.cert_ttl)
    identity = own_cert.issued.identity.uri
    # Re-read within a call of any revocation, also one made by `capstan pki revoke`.
    revoked = RevokedSerials(config.pki_dir)
    settings = LifecycleSettings(
        node_cert_ttl=config.node_cert_ttl,
        token_lifetime=max(config.token_ttl, config.delegation_ttl, 30.0),
    )
    events: list[tuple[str, float]] = []  # the lifecycle's timings, for operators

    raw = _open_store(config, clock)
    await raw.open()
    metrics.time_store(raw)

    # The server and its ports first: nodes are told the addresses actually bound
    # (port 0: the kernel chose), and the leadership advertises them. Its gates read
    # the cluster state and the audit log built below, from the store the leadership
    # fences: no call reaches them before the server starts, at the end.
    leader_seen: dict[str, str] = {}  # the last leader read from the store, for redirects
    peers: list[str] = []  # every orchestrator's NodeGateway address, for joining nodes

    async def redirect(method: str) -> str:
        # Read now (a follower may have been paused or cut off: its cache is stale),
        # the cache only when the store does not answer at once.
        with contextlib.suppress(Exception):
            async with asyncio.timeout(0.5):
                info = await leadership.leader()
                leader_seen.update(
                    address=info.address if info else "", join=info.join_address if info else ""
                )
        where = leader_seen.get("join" if method.endswith("/Join") else "address", "")
        # Never to itself: a deposed leader's record may linger until its lease ends.
        return "" if where in leader_seen.get("own", "").split(",") else where

    # Serving as leader only once the store has been read back: a call that arrived
    # between the election and the end of that would see stale memory.
    ready = asyncio.Event()
    authz = Gate(
        trust_domain=ca.authority.trust_domain,
        revoked=revoked,
        bell=revoked.bell,
        # Built below: read at call time, never before the server starts.
        nodes=lambda name: state.node(name),  # noqa: PLW0108
        record=lambda event, **fields: audit.record(event, **fields),  # noqa: PLW0108
        clock=clock,
    )
    leader_gate = LeaderGate(
        lambda: leadership.leading and ready.is_set(), redirect, authz.authenticate
    )
    # A follower sends every authenticated call to the leader before anything else;
    # the leader authorizes each call before its handler runs.
    server = grpc.aio.server(
        options=ORCHESTRATOR_SERVER_OPTIONS,
        interceptors=[leader_gate, AuthorizationInterceptor(authz)],
    )
    # Dynamic credentials: a renewed certificate or a new trust bundle is served from
    # the next handshake on, without a restart and without dropping a call.
    port = server.add_secure_port(config.listen, own_cert.server_credentials(client_auth=True))
    join_port = server.add_secure_port(
        config.join_listen, own_cert.server_credentials(client_auth=False)
    )
    if not port or not join_port:
        raise ConfigError(f"cannot listen on {config.listen} / {config.join_listen}")
    gateway_address = f"{config.host}:{port}"
    join_address = f"{config.join_listen.rpartition(':')[0]}:{join_port}"
    leader_seen["own"] = f"{gateway_address},{join_address}"

    leadership = Leadership(
        raw,
        identity=config.member,
        address=gateway_address,
        join_address=join_address,
        ttl=config.leader_ttl,
        exclusive=not config.etcd,
        clock=clock,
    )
    store = FencedStore(raw, leadership)
    state = ClusterState(store)
    await state.load()

    def certificates() -> list[tuple[str, str, float]]:
        out = [("orchestrator", config.member, own_cert.issued.not_after)]
        out.extend(("node", n.name, n.cert_expiry) for n in state.all_nodes())
        return out

    def unsettled() -> int:
        return sum(
            1 for w in state.all_workloads()
            if (w.desired == "running") != (w.state == "running") and w.state != "removed"
        )

    metrics.watch_certificates(certificates)
    metrics.watch_reconcile_queue(unsettled)
    audit = AuditLog(store, clock)

    tracker = Tracker(heartbeat=config.heartbeat, grace=config.grace, clock=clock, started=clock())
    minter = Minter(
        token_keys, issuer=identity, audit=audit, epoch=leadership.current_epoch, clock=clock
    )
    caller = NodeCaller(
        minter,
        identity=identity,
        thumbprint=own_cert.issued.thumbprint,
        credentials=own_cert.client_credentials(),
        ttl=config.token_ttl,
    )
    streams = NodeStreams()
    trust = TrustPush(
        streams=streams,
        ca=ca,
        token_keys=lambda: TokenKeyStore.open(keys_path),
        revoked=revoked,
        clock=clock,
        settings=settings,
        epoch=leadership.current_epoch,
    )
    async def secret_rotated(tenant: str, name: str) -> int:
        # The reconciler (built below, it seals with the secret service) re-seals a
        # rotated secret for the nodes whose instances use it.
        return await reconciler.secret_rotated(tenant, name)

    # The key-encryption keys of secrets live beside the token keys, never in the store.
    secret_service = SecretService(
        state=state,
        kek=SecretKeyStore.open_or_create(config.pki_dir / "secret-keys"),
        audit=audit,
        clock=clock,
        on_rotated=secret_rotated,
    )
    tasks = TaskBook(store, clock)
    link_planner = LinkPlanner(
        state=state,
        tracker=tracker,
        minter=minter,
        audit=audit,
        send=streams.send,
        stream_of=streams.get,
        clock=clock,
    )
    reconciler = Reconciler(
        state,
        tracker,
        caller,
        audit,
        clock=clock,
        interval=config.reconcile_interval,
        tasks=tasks,
        delegator=Delegator(
            minter=minter,
            tasks=tasks,
            tracker=tracker,
            audit=audit,
            send=streams.send,
            ttl=config.delegation_ttl,
            clock=clock,
        ),
        links=link_planner,
        secrets=secret_service,
    )
    await reconciler.policies.load()
    node_certs = NodeCertificates(ca=ca, state=state, audit=audit, settings=settings, clock=clock)
    gateway = Gateway(
        state=state,
        tracker=tracker,
        audit=audit,
        ca=ca,
        certs=node_certs,
        streams=streams,
        trust=trust,
        issuer=identity,
        gateway_address=gateway_address,
        heartbeat=config.heartbeat,
        clock=clock,
        tasks=tasks,
        on_completion=reconciler.on_completion,
        assignments=reconciler.assignments,
        on_report=reconciler.reported,
        reserved_sans=(*dns, *ips),
        epoch=leadership.current_epoch,
        peer_addresses=lambda: [a for a in peers if a != gateway_address],
        pool_policy=reconciler.policies.pool,
    )
    self_renewal = SelfRenewal(
        own=own_cert,
        ca=ca,
        caller=caller,
        audit=audit,
        supersede=node_certs.supersede,
        events=events,
    )
    revoker = Revoker(
        pki_dir=config.pki_dir,
        ca=ca,
        revoked=revoked,
        trust=trust,
        streams=streams,
        state=state,
        audit=audit,
        wake=reconciler.wake,
        events=events,
    )
    lifecycle = Lifecycle(
        ca=ca,
        self_renewal=self_renewal,
        revoker=revoker,
        keys=TokenKeyRotation(
            keys_path=keys_path,
            minter=minter,
            trust=trust,
            audit=audit,
            settings=settings,
            events=events,
        ),
        ca_rotation=CaRotation(
            pki_dir=config.pki_dir,
            ca=ca,
            own=own_cert,
            caller=caller,
            trust=trust,
            streams=streams,
            state=state,
            audit=audit,
            renew_own=self_renewal,
            clock=clock,
            settings=settings,
            events=events,
        ),
        node_certs=node_certs,
        settings=settings,
        events=events,
        clock=clock,
    )
    liveness = LivenessWatch(reconciler)
    rebalancer = Rebalancer(reconciler, audit, clock=clock)
    autoscaler = Autoscaler(reconciler, audit, clock=clock)

    async def describe() -> control_pb2.OrchestratorsInfo:
        info = control_pb2.OrchestratorsInfo(
            store="etcd" if config.etcd else "sqlite", answered_by=config.member
        )
        leader = await leadership.leader()
        if leader is not None:
            info.epoch, info.leader, info.leader_address = (
                leader.epoch,
                leader.identity,
                leader.address,
            )
        for m in sorted(await orchestrators(raw), key=lambda m: m.identity):
            info.members.append(
                control_pb2.OrchestratorMember(
                    member=m.identity,
                    address=m.address,
                    join_address=m.join_address,
                    leader=leader is not None and m.address == leader.address,
                )
            )
        if isinstance(raw, EtcdStore):
            for h in await raw.members():
                info.etcd.append(
                    control_pb2.EtcdMember(
                        name=h.name,
                        endpoint=h.url,
                        healthy=h.healthy,
                        leader=h.leader,
                        error=h.error,
                    )
                )
        return info

    control = ControlService(
        state=state,
        reconciler=reconciler,
        audit=audit,
        minter=minter,
        ca=ca,
        rebalancer=rebalancer,
        revoker=revoker,
        pki_status=PkiStatus(
            pki_dir=config.pki_dir,
            ca=ca,
            own=own_cert,
            state=state,
            minter=minter,
            clock=clock,
        ),
        delegation_ttl=config.delegation_ttl,
        clock=clock,
        secrets=secret_service,
        orchestrators=describe,
    )

    control_pb2_grpc.add_ControlServiceServicer_to_server(control, server)
    secrets_pb2_grpc.add_SecretServiceServicer_to_server(secret_service, server)
    gateway_pb2_grpc.add_NodeGatewayServicer_to_server(gateway, server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    names = (
        control_pb2.DESCRIPTOR.services_by_name["ControlService"].full_name,
        gateway_pb2.DESCRIPTOR.services_by_name["NodeGateway"].full_name,
        secrets_pb2.DESCRIPTOR.services_by_name["SecretService"].full_name,
        health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
    )
    enable_reflection(names, server)
    await server.start()
    for name in ("", *names[:2]):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)

    orch = Orchestrator(
        config,
        server,
        store,
        state,
        reconciler,
        gateway,
        audit,
        identity,
        port,
        join_port,
        [],
        liveness,
        rebalancer,
        autoscaler,
        lifecycle,
        leadership,
        secret_service,
        authz=authz,
        streams=streams,
    )

    async def elected(epoch: int) -> None:
        # Everything the previous leader may have changed is read back from the
        # store; what only it held in memory is rebuilt (docs/high-availability.md).
        ready.clear()
        await state.load()
        await reconciler.policies.load()
        # A key-encryption key rotated with `capstan pki rotate-secrets-key` since the
        # last election: every secret's data key is re-wrapped under the new one.
        secret_service.use_keys(SecretKeyStore.open_or_create(config.pki_dir / "secret-keys"))
        await secret_service.load()
        rewrapped = await secret_service.rewrap_all()
        if rewrapped:
            log.info("re-wrapped %d secret(s) under the active key-encryption key", rewrapped)
        audit.reload()
        # Nodes reconnect after a takeover with their backoff (the old leader's stream
        # broke, followers refused them): more than one grace period before any is
        # declared dead, or a leader change would move workloads for nothing.
        tracker.begin(clock() + (config.takeover_grace if config.etcd else 0.0))
        reconciler.pending.clear()
        await audit.record("orchestrator.elected", id=identity, member=config.member, epoch=epoch)
        orch.duties = [
            asyncio.create_task(reconciler.run(), name="reconciler"),
            asyncio.create_task(liveness.run(), name="liveness"),
            asyncio.create_task(rebalancer.run(), name="rebalancer"),
            asyncio.create_task(autoscaler.run(), name="autoscaler"),
            asyncio.create_task(lifecycle.run(), name="lifecycle"),
            # Apart from the reconciler: a tick waiting on node calls must not delay a
            # withdrawal (open tunnels close within 2 s of it).
            asyncio.create_task(link_planner.run(), name="links"),
        ]
        ready.set()
        log.info("orchestrator %s leads (epoch %d)", identity, epoch)

    async def lost() -> None:
        ready.clear()
        duties, orch.duties = orch.duties, []
        for task in duties:
            task.cancel()
        for task in duties:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        streams.end_all(ConnectionAbortedError("leadership ended"))
        log.warning("orchestrator %s no longer leads (epoch %d)", identity, leadership.epoch)

    first = asyncio.Event()

    async def on_elected(epoch: int) -> None:
        try:
            await elected(epoch)
        finally:
            first.set()

    async def watch_leader() -> None:
        # What followers redirect to, and the addresses joining nodes are given.
        while True:
            with contextlib.suppress(Exception):
                info = await leadership.leader()
                if info is None:
                    leader_seen.update(address="", join="")
                else:
                    leader_seen.update(address=info.address, join=info.join_address)
                peers[:] = sorted(m.address for m in await orchestrators(raw))
            await asyncio.sleep(leadership.ttl / 2)

    orch.tasks = [
        asyncio.create_task(run_as_leader(leadership, on_elected, lost), name="leadership"),
        asyncio.create_task(leadership.register(), name="membership"),
        asyncio.create_task(watch_leader(), name="leader-watch"),
    ]
    orch.tasks.append(asyncio.create_task(_cancel_duties_on_stop(orch), name="duties"))

    async def look_at_revocations() -> None:
        # Rings the bell when `capstan pki revoke` (another process) changed the list:
        # held streams then end at once instead of each polling the file.
        revoked()

    orch.tasks.append(
        asyncio.create_task(every(TICK, look_at_revocations, "revocations"), name="revocations")
    )
    if not config.etcd:
        await first.wait()  # alone on its file: it leads at once
    log.info("orchestrator %s serving on %s, join on %s", identity, port, join_port)
    return orch


async def _cancel_duties_on_stop(orch: Orchestrator) -> None:
    try:
        await asyncio.Event().wait()
    finally:
        for task in orch.duties:
            task.cancel()
        for task in orch.duties:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


def _open_store(config: OrchestratorConfig, clock: Callable[[], float]) -> Store:
    if not config.etcd:
        return SqliteStore(config.store, clock=clock)
    tls = EtcdTLS(*config.etcd_tls) if config.etcd_tls else None
    return EtcdStore(config.etcd, namespace=config.etcd_namespace, tls=tls, clock=clock)


def run(config: OrchestratorConfig) -> None:
    """Serve until SIGTERM or SIGINT; print one ready line on stdout."""

    async def main() -> None:
        orch = await start(config)
        endpoint = serve_metrics(config.metrics_listen, metrics.REGISTRY)
        host, join_host = config.listen.rpartition(":")[0], config.join_listen.rpartition(":")[0]
        where = f"{host}:{orch.port} join on {join_host}:{orch.join_port}"
        print(f"orchestrator {orch.identity} listening on {where}", flush=True)
        print(f"metrics on {endpoint.url}", flush=True)
        done = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, done.set)
        await done.wait()
        await orch.stop()

    asyncio.run(main())
    sys.stdout.flush()
