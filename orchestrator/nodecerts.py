"""Signing node certificates, at join and at renewal, always for the identity and
addresses the orchestrator records for the node, never those a CSR or request asks
for. Both paths use one authority and one lifetime."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

import grpc
import grpc.aio

from orchestrator.audit import AuditLog
from orchestrator.authz import Caller
from orchestrator.ca import CurrentAuthority
from orchestrator.config import LifecycleSettings
from orchestrator.state import ClusterState
from pki.authority import Issued
from pki.certs import thumbprint
from pki.errors import CapstanError, PKIError
from pki.identity import Kind
from protos import control_pb2, gateway_pb2

log = logging.getLogger("capstan.orchestrator.lifecycle")


@dataclass(frozen=True)
class NodeCertificate:
    """A signed node certificate with the CA that signed it and that CA's trust bundle,
    all read from one authority: a CA rotation landing between the signature and the
    record must not record (or hand out) a CA other than the signer (regression)."""

    issued: Issued
    issuer: str  # thumbprint of the intermediate that signed it
    trust_bundle: bytes


class NodeCertificates:
    def __init__(
        self,
        *,
        ca: CurrentAuthority,
        state: ClusterState,
        audit: AuditLog,
        settings: LifecycleSettings,
        clock: Callable[[], float],
    ) -> None:
        self._ca = ca
        self._state = state
        self._audit = audit
        self._settings = settings
        self._clock = clock
        # Previous node certificates after a renewal: serial -> when it is revoked.
        self._superseded: dict[int, float] = self._superseded_at_start()

    async def sign(
        self, csr_pem: bytes, name: str, *, dns: list[str], ips: list[str]
    ) -> NodeCertificate:
        """A certificate for node ``name`` with these addresses; CapstanError if the CSR
        is unusable."""
        authority = self._ca.authority  # once: the signer is the CA recorded
        issued = await asyncio.to_thread(
            authority.sign_csr,
            csr_pem,
            Kind.NODE,
            name,
            dns=dns,
            ips=ips,
            ttl=self._settings.node_cert_ttl,
        )
        return NodeCertificate(
            issued, thumbprint(authority.intermediate), authority.trust_bundle()
        )

    async def renew(
        self,
        node: control_pb2.NodeRecord,
        caller: Caller,
        request: gateway_pb2.RenewRequest,
        context: grpc.aio.ServicerContext,
    ) -> gateway_pb2.RenewResponse:
        """NodeGateway.Renew: sign the CSR's key for the calling node's recorded identity
        and addresses (the interceptor has checked the caller is that node, joined and
        unrevoked)."""
        try:
            signed = await self.sign(
                request.csr_pem, node.name, dns=list(node.dns), ips=list(node.ips)
            )
        except CapstanError as exc:
            await self._audit.record("renew.refused", node=node.name, reason=str(exc))
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"csr_pem: {exc}")
        async with self._state.lock:
            record = self._state.node(node.name)
            if record is None or record.id != node.id or record.state == "revoked":
                await context.abort(grpc.StatusCode.PERMISSION_DENIED, "not a joined node")
            assert record is not None  # abort raised  # noqa: S101
            previous = int(record.cert_serial, 16) if record.cert_serial else None
            issued = signed.issued
            record.cert_expiry = issued.not_after
            record.cert_serial = f"{issued.serial:X}"
            record.issuer_ca = signed.issuer
            await self._state.save_node(record)
        # The certificate that asked, and the one recorded before (they may differ
        # after a crash between two renewals), become unusable after the grace.
        deadline = self._clock() + self._settings.superseded_grace
        for serial in {caller.serial, previous} - {None, issued.serial}:
            assert serial is not None  # noqa: S101 - filtered above
            self.supersede(serial)
        await self._audit.record(
            "cert.renewed",
            kind="node",
            name=node.name,
            serial=f"{issued.serial:X}",
            previous=f"{caller.serial:X}",
            not_after=issued.not_after,
            previous_usable_until=deadline,
        )
        return gateway_pb2.RenewResponse(
            certificate_chain=issued.chain_pem,
            trust_bundle=signed.trust_bundle,
            not_after=issued.not_after,
        )

    def supersede(self, serial: int) -> float:
        """A certificate replaced by a new one (a node's renewal or rejoin, the
        orchestrator's own renewal): revoked one grace
        from now. Returns when."""
        return self._superseded.setdefault(serial, self._clock() + self._settings.superseded_grace)

    def _superseded_at_start(self) -> dict[int, float]:
        """Live node certificates that are not their node's current one (a renewal
        before a restart): revoked one grace from now."""
        now = self._clock()
        current = {n.cert_serial.upper() for n in self._state.all_nodes() if n.cert_serial}
        nodes = {n.name for n in self._state.all_nodes()}
        return {
            r.serial: now + self._settings.superseded_grace
            for r in self._ca.authority.list()
            if r.kind is Kind.NODE
            and r.name in nodes
            and not r.revoked
            and r.not_after > now
            and f"{r.serial:X}" not in current
        }

    async def retire_superseded(self, now: float) -> None:
        """Revoke (reason superseded) the previous certificates whose grace is over; the
        deny list carries them to every node in the same step."""
        due = [serial for serial, at in self._superseded.items() if now >= at]
        for serial in due:
            del self._superseded[serial]
            try:
                await asyncio.to_thread(self._ca.authority.revoke, serial, "superseded")
            except PKIError as exc:
                log.warning("previous certificate %X stays: %s", serial, exc)
                continue
            await self._audit.record("cert.superseded", serial=f"{serial:X}")
