"""The orchestrator's own serving and client certificate, renewable while serving."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable

import grpc
from cryptography.hazmat.primitives import serialization

from orchestrator.audit import AuditLog
from orchestrator.ca import CurrentAuthority
from orchestrator.errors import OrchestratorError
from orchestrator.nodecalls import NodeCaller
from pki.authority import Authority, Issued
from pki.certs import load_pem_chain
from pki.identity import Kind
from pki.lifetime import renewal_point
from protos.wire.channel import client_credentials


def _public_key_of(pem: bytes) -> bytes:
    cert = load_pem_chain(pem, "CA certificate")[0]
    return cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


class OwnCertificate:
    """The orchestrator's serving and client certificate, renewable while serving.

    Server credentials are gRPC dynamic credentials: the core asks ``fetch`` at each
    new handshake and gets the new configuration once after every change, so calls on
    existing connections continue and new ones see the new certificate or roots.
    """

    def __init__(
        self,
        authority: Authority,
        name: str,
        *,
        dns: list[str],
        ips: list[str],
        ttl: float | None = None,
        rng: random.Random | None = None,
        now: float | None = None,
    ) -> None:
        self._name, self._dns, self._ips, self._ttl = name, dns, ips, ttl
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not a secret
        self._generation = 0
        self._cross: bytes | None = None
        self._cross_key = b""
        self._issuer_key = b""
        self.issued = self._issue(authority, now)
        self.bundle = authority.trust_bundle()
        self.renew_at = self._point()

    def _issue(self, authority: Authority, now: float | None) -> Issued:
        issued = authority.issue(
            Kind.ORCHESTRATOR, self._name, dns=self._dns, ips=self._ips, ttl=self._ttl, now=now
        )
        if issued.key_pem is None:
            raise OrchestratorError("orchestrator certificate has no key")
        self._issuer_key = _public_key_of(authority.intermediate_pem())
        return issued

    def _point(self) -> float:
        cert = self.issued.cert
        return renewal_point(
            cert.not_valid_before_utc.timestamp(), cert.not_valid_after_utc.timestamp(), self._rng
        )

    @property
    def key_pem(self) -> bytes:
        assert self.issued.key_pem is not None  # noqa: S101 - _issue checked it
        return self.issued.key_pem

    @property
    def chain_pem(self) -> bytes:
        """What the orchestrator presents: during a CA rotation, its leaf with the new
        intermediate cross-signed by the old root, so clients that hold only the old root
        (operators' contexts) still verify it; peers with both roots verify it too."""
        if self._cross is not None and self._cross_key == self._issuer_key:
            return self.issued.cert_pem + self._cross
        return self.issued.chain_pem

    def present_cross(self, cross: bytes | None) -> None:
        """Present ``cross`` (the new intermediate cross-signed by the old root) with a
        leaf of that intermediate; ignored for a leaf of another CA."""
        if cross != self._cross:
            self._cross = cross
            self._cross_key = _public_key_of(cross) if cross is not None else b""
            self._generation += 1

    def _config(self, client_auth: bool) -> grpc.ServerCertificateConfiguration:
        pairs = [(self.key_pem, self.chain_pem)]
        if client_auth:
            return grpc.ssl_server_certificate_configuration(pairs, root_certificates=self.bundle)
        return grpc.ssl_server_certificate_configuration(pairs)

    def server_credentials(self, *, client_auth: bool) -> grpc.ServerCredentials:
        served = [self._generation]

        def fetch() -> grpc.ServerCertificateConfiguration | None:
            # Runs on a gRPC core thread: reads two attributes, builds one object.
            generation = self._generation
            if generation == served[0]:
                return None
            served[0] = generation
            return self._config(client_auth)

        return grpc.dynamic_ssl_server_credentials(
            self._config(client_auth), fetch, require_client_authentication=client_auth
        )

    def client_credentials(self) -> grpc.ChannelCredentials:
        return client_credentials(self.chain_pem, self.key_pem, self.bundle)

    def renew(self, authority: Authority, *, now: float | None = None) -> Issued:
        """A new key and certificate from ``authority``, served from the next handshake."""
        issued = self._issue(authority, now)
        self.issued = issued
        self.renew_at = self._point()
        self._generation += 1
        return issued

    def trust(self, bundle: bytes) -> None:
        """Verify clients against ``bundle`` from the next handshake."""
        if bundle != self.bundle:
            self.bundle = bundle
            self._generation += 1


class SelfRenewal:
    """Renews the orchestrator's own certificate: servers and the node caller switch
    to it at once."""

    def __init__(
        self,
        *,
        own: OwnCertificate,
        ca: CurrentAuthority,
        caller: NodeCaller,
        audit: AuditLog,
        supersede: Callable[[int], float],
        events: list[tuple[str, float]],
    ) -> None:
        self.own = own
        self._supersede = supersede  # revokes a replaced certificate after a grace
        self._ca = ca
        self._caller = caller
        self._audit = audit
        self._events = events

    def due(self, now: float) -> bool:
        return now >= self.own.renew_at

    async def __call__(self, *, now: float | None = None) -> Issued:
        started = time.monotonic()
        previous = self.own.issued.serial
        issued = await asyncio.to_thread(self.own.renew, self._ca.authority, now=now)
        self._caller.set_credentials(self.own.client_credentials(), issued.thumbprint)
        # Old channels finish their calls within nodecalls.CHANNEL_GRACE (shorter than
        # the grace), then the previous certificate is revoked like a node's.
        usable_until = self._supersede(previous) if previous != issued.serial else None
        await self._audit.record(
            "cert.renewed",
            kind="orchestrator",
            name=issued.identity.name,
            serial=f"{issued.serial:X}",
            not_after=issued.not_after,
            previous=f"{previous:X}",
            previous_usable_until=usable_until,
        )
        self._events.append(("orchestrator certificate renewed", time.monotonic() - started))
        return issued
