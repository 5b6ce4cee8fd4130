"""Assembles a node agent: mTLS server, authorization interceptor, NodeService,
health and reflection."""

from __future__ import annotations

import contextlib
import ctypes
import functools
import gc
import logging
import os
import time
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from node.audit import NodeAudit
from node.authz import AuthorizationInterceptor, Authorizer, PeerLimits
from node.config import NodeConfig
from node.links import LinkManager, tunnel_channel
from node.renewal import read_pair
from node.runtime import select_runtime
from node.runtime.base import Runtime
from node.secretfiles import SecretFiles
from node.service import NodeServicer
from node.volumes import VolumeStore
from pki.certs import identity_of, load_pem_chain
from pki.errors import ConfigError
from pki.files import read_file
from pki.reloading import ReloadingFile
from pki.tokenkeys import KeySet
from pki.tokens import ReplayCache, TokenVerifier
from protos import node_pb2, node_pb2_grpc
from protos.wire.channel import NODE_SERVER_OPTIONS
from protos.wire.grants import Reaper
from protos.wire.reflection import enable_reflection
from protos.wire.trust import parse_deny_list

log = logging.getLogger("capstan.node")

#: Seconds (of the agent's clock) between two looks at the JWKS and deny-list files
#: for a change another process made. The node's own trust updates (the Report
#: stream's, written with ``atomic_write``) count from the next call; see
#: ``pki.reloading.ReloadingFile``.
TRUST_FILE_CHECK = 0.05


@functools.cache
def _capstan_version() -> str:
    # Looked up on the first GetNodeInfo, not at start: importlib.metadata pulls in
    # email, zipfile and csv, a few MB of an idle agent's memory for one string.
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("capstan")
    except PackageNotFoundError:
        return "dev"


def release_startup_memory() -> None:
    """Hand the heap that start-up freed (imports, TLS set-up) back to the system: an
    idle agent's resident memory is what the host pays for every node."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


class TlsFiles:
    """Server credentials re-read from disk when the certificate, key or bundle change,
    so a renewed certificate is served to new connections without a restart."""

    def __init__(self, cert: Path, key: Path, ca: Path) -> None:
        self._paths = (cert, key, ca)
        self._stamp = self._stat()
        self.initial = self._config()

    def _stat(self) -> tuple[tuple[int, int], ...]:
        out = []
        for p in self._paths:
            try:
                st = os.stat(p)
                out.append((st.st_mtime_ns, st.st_size))
            except OSError:
                out.append((0, 0))
        return tuple(out)

    def _config(self) -> grpc.ServerCertificateConfiguration:
        # A pair that does not match (a renewal between the two reads, see
        # node/renewal.py) raises: fetch() keeps the current credentials and retries.
        cert, key = read_pair(self._paths[0], self._paths[1], attempts=1)
        ca = read_file(self._paths[2], "trust bundle")
        return grpc.ssl_server_certificate_configuration([(key, cert)], root_certificates=ca)

    def fetch(self) -> grpc.ServerCertificateConfiguration | None:
        stamp = self._stat()
        if stamp == self._stamp:
            return None
        try:
            config = self._config()
        except ConfigError as exc:
            log.error("keeping current TLS credentials: %s", exc)
            return None
        self._stamp = stamp
        log.info("serving renewed TLS credentials")
        return config


@dataclass
class NodeAgent:
    server: grpc.Server
    port: int
    node_id: str
    runtime: Runtime
    authorizer: Authorizer
    audit: NodeAudit
    health: health.HealthServicer
    links: LinkManager
    reaper: Reaper
    limits: PeerLimits
    secrets: SecretFiles  # this node's seal key and its instances' secret files

    def stop(self, grace: float | None = 1.0) -> None:
        self.secrets.close()
        self.health.enter_graceful_shutdown()
        self.links.stop()
        self.server.stop(grace).wait()
        self.reaper.stop()
        self.runtime.close()


def build_agent(
    config: NodeConfig,
    *,
    runtime: Runtime | None = None,
    clock: Callable[[], float] = time.time,
    max_workers: int = 32,
) -> NodeAgent:
    """Build and start a node agent; returns once it listens."""
    chain = load_pem_chain(read_file(config.cert, "node certificate"), "node certificate")
    identity = identity_of(chain[0])
    config.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    audit = NodeAudit(config.state_dir / "audit.jsonl")

    jwks = ReloadingFile(
        config.jwks,
        KeySet.from_jwks,
        "token keys (JWKS)",
        interval=TRUST_FILE_CHECK,
        clock=clock,
    )
    if config.deny_list is not None:
        deny = ReloadingFile(
            config.deny_list,
            parse_deny_list,
            "deny list",
            interval=TRUST_FILE_CHECK,
            clock=clock,
        )
        revoked: Callable[[], frozenset[int]] = deny.get
    else:
        revoked = frozenset

    verifier = TokenVerifier(
        jwks.get,
        audience=identity.uri,
        issuers=config.issuers,
        max_ttl=config.max_token_ttl,
        replay=ReplayCache(),
        clock=clock,
    )
    authorizer = Authorizer(
        verifier=verifier,
        trust_domain=identity.trust_domain,
        revoked=revoked,
        audit=audit,
        clock=clock,
    )
    if runtime is None:
        runtime = select_runtime(
            None if config.runtime == "auto" else config.runtime, identity.uri, config.state_dir
        )

    reaper = Reaper(clock=clock, revoked=revoked)
    # A quarter of the threads per peer: three busy peers still leave room for a fourth.
    limits = PeerLimits(streams_per_peer=max(1, max_workers // 4))
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="capstan-node"),
        interceptors=[AuthorizationInterceptor(authorizer, reaper=reaper, limits=limits)],
        options=NODE_SERVER_OPTIONS,
        maximum_concurrent_rpcs=max_workers * 4,
    )
    links = LinkManager(
        runtime,
        node_id=identity.uri,
        publish_host=config.listen.rpartition(":")[0].strip("[]") or "0.0.0.0",  # noqa: S104
        audit=audit,
        revoked=revoked,
        channel_for=functools.partial(tunnel_channel, config.cert, config.key, config.ca),
        clock=clock,
    )

    secret_files = SecretFiles(config.state_dir)
    servicer = NodeServicer(
        node_id=identity.uri,
        runtime=runtime,
        volumes=VolumeStore(config.state_dir / "volumes"),
        spool_dir=config.state_dir / "spool",
        labels=dict(config.labels),
        version=_capstan_version,
        links=links,
        peer_of=authorizer.peer,
        secrets=secret_files,
    )
    node_pb2_grpc.add_NodeServiceServicer_to_server(servicer, server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    services = (
        node_pb2.DESCRIPTOR.services_by_name["NodeService"].full_name,
        health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
    )
    enable_reflection(services, server)

    tls = TlsFiles(config.cert, config.key, config.ca)
    creds = grpc.dynamic_ssl_server_credentials(
        tls.initial, tls.fetch, require_client_authentication=True
    )
    port = server.add_secure_port(config.listen, creds)
    if port == 0:
        raise ConfigError(f"cannot listen on {config.listen}")
    server.start()
    links.start()
    health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    health_servicer.set(services[0], health_pb2.HealthCheckResponse.SERVING)
    log.info("node %s serving on %s (runtime %s)", identity.uri, port, runtime.name)
    release_startup_memory()
    return NodeAgent(
        server,
        port,
        identity.uri,
        runtime,
        authorizer,
        audit,
        health_servicer,
        links,
        reaper,
        limits,
        secret_files,
    )
