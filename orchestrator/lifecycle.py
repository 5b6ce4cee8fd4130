"""Certificate and key lifecycle on a running orchestrator, without downtime.

- **Its own certificate** (``OwnCertificate``): served through gRPC's dynamic server
  credentials and renewed at about 2/3 of its life; the node caller switches to the
  new client certificate at the same moment.
- **Node renewal** (``Lifecycle.renew_node``, behind ``NodeGateway.Renew``): the node
  is the one its peer certificate names; the leaf is signed for exactly the identity
  and addresses on record for that node, never those of the CSR or the request.
- **Revocation** (``revoke_node``, and ``capstan pki revoke`` seen on the PKI state
  file): every caller check reads the revoked serials through ``RevocationCache`` (one
  stat per call), the deny list is pushed to every connected node, the node is marked
  revoked (its workloads are placed elsewhere) and the CRL files are regenerated.
- **Token-key rotation**, staged: a new active key in the key store is pushed to every
  node first; the minter signs with it only once every connected node acknowledged
  the new JWKS (``trust_digest`` in its status); the old key is retired once the last
  token it signed has expired.
- **CA rotation** (after ``capstan pki rotate-ca``): the two-root bundle is pushed and
  acknowledged first, then the orchestrator trusts it itself, renews its own
  certificate, and asks the nodes to renew in batches (``renew_now``); the old root
  is dropped when no leaf in use depends on it (``pki.rotation.finish_rotation``).

``step(now)`` runs one round of every check; ``run()`` calls it on a timer. Tests call
``step`` with an advanced clock instead of waiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
from cryptography.hazmat.primitives import serialization

from orchestrator._periodic import every
from orchestrator.apply import InvalidApplication
from orchestrator.audit import AuditLog
from orchestrator.authz import Caller
from orchestrator.control import NotFound
from orchestrator.errors import OrchestratorError
from orchestrator.minter import Minter
from orchestrator.nodecalls import NodeCaller
from orchestrator.reconciler import Reconciler
from orchestrator.state import ClusterState
from pki._build import CLOCK_SKEW
from pki._state import CertRecord, load_state
from pki.authority import REVOCATION_REASONS, Authority, Issued
from pki.certs import load_pem_chain, thumbprint
from pki.errors import CapstanError, PKIError
from pki.identity import Kind
from pki.rotation import CROSS_CERT, finish_rotation, rotation_status, write_crls
from pki.tokenkeys import TokenKeyStore
from protos import control_pb2, gateway_pb2
from protos.wire.channel import client_credentials
from protos.wire.grants import Bell
from protos.wire.trust import trust_digest

log = logging.getLogger("capstan.orchestrator.lifecycle")

__all__ = [
    "Lifecycle",
    "LifecycleSettings",
    "OwnCertificate",
    "RevocationCache",
    "renewal_state",
]

FRACTION = 2.0 / 3.0
OVERDUE = 0.8  # of the life: past this, a renewal that should have happened did not


# -- revoked serials ---------------------------------------------------------------------


class RevocationCache:
    """The PKI's revoked serials, re-read whenever ``state.json`` changes.

    Called on every authenticated call: one ``stat`` each, a parse only after a change
    (``capstan pki revoke`` in another process replaces the file, so its inode changes).
    """

    def __init__(self, pki_dir: Path) -> None:
        self._path = Path(pki_dir) / "state.json"
        self._stamp: tuple[int, int, int] | None = None
        self._serials: frozenset[int] = frozenset()
        # Rung when the revoked serials change: held streams end at once (grants.guarded).
        self.bell = Bell()
        self.refresh()

    def _stat(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self._path)
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def refresh(self) -> frozenset[int]:
        stamp = self._stat()
        if stamp != self._stamp or stamp is None:
            try:
                state = load_state(self._path.parent)
            except CapstanError as exc:
                # Keep the last good list: a damaged file must not un-revoke anything.
                log.error("keeping the previous revocations: %s", exc)
                return self._serials
            serials = frozenset(c.serial for c in state.certificates if c.revoked)
            changed = serials != self._serials
            self._serials = serials
            self._stamp = stamp
            if changed:
                self.bell.ring()
        return self._serials

    def __call__(self) -> frozenset[int]:
        return self.refresh()


# -- the orchestrator's own certificate ----------------------------------------------------


def _renew_point(not_before: float, not_after: float, rng: random.Random) -> float:
    issued = not_before + CLOCK_SKEW if not_after - not_before > CLOCK_SKEW else not_before
    return issued + (not_after - issued) * rng.uniform(FRACTION - 0.05, FRACTION + 0.05)


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
        return _renew_point(
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


# -- renewal state, for status ------------------------------------------------------------


def renewal_state(not_before: float, not_after: float, now: float) -> str:
    """ok, due (past 2/3 of its life), overdue (past 4/5: renewal is failing), expired."""
    if now >= not_after:
        return "expired"
    issued = not_before + CLOCK_SKEW if not_after - not_before > CLOCK_SKEW else not_before
    life = max(1.0, not_after - issued)
    used = (now - issued) / life
    if used >= OVERDUE:
        return "overdue"
    if used >= FRACTION - 0.05:
        return "due"
    return "ok"


# -- the lifecycle -------------------------------------------------------------------------


@dataclass
class LifecycleSettings:
    node_cert_ttl: float | None = None  # None: the PKI's default for nodes (24 h)
    period: float = 0.5  # seconds between checks
    ack_timeout: float = 10.0  # how long a trust push waits for every connected node
    batch: int = 3  # nodes re-issued at a time during a CA rotation
    batch_timeout: float = 30.0
    token_lifetime: float = 60.0  # longest lifetime of a token this orchestrator mints
    # After a node renews, its previous certificate stays usable this long (calls in
    # flight, tokens bound to it: at most token_lifetime), then it is revoked.
    superseded_grace: float = 90.0
    retire_margin: float = 30.0  # clock skew allowance before an old token key is retired


class Refused(OrchestratorError):
    """A renewal the orchestrator will not sign (PERMISSION_DENIED)."""


class Lifecycle:
    def __init__(
        self,
        *,
        pki_dir: Path,
        authority: Authority,
        own: OwnCertificate,
        gateway: Any,
        state: ClusterState,
        audit: AuditLog,
        minter: Minter,
        caller: NodeCaller,
        reconciler: Reconciler,
        revocations: RevocationCache,
        settings: LifecycleSettings,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.pki_dir = Path(pki_dir)
        self.authority = authority
        self.own = own
        self._gateway = gateway
        self._state = state
        self._audit = audit
        self._minter = minter
        self._caller = caller
        self._reconciler = reconciler
        self.revocations = revocations
        self.settings = settings
        self._clock = clock
        self._keys_path = self.pki_dir / "token-keys"
        self._pushed_revoked = revocations()
        self._bundle = authority.trust_bundle()
        self._retire: dict[str, float] = {}  # token kid -> when its last token expired
        # Previous node certificates after a renewal: serial -> when it is revoked.
        self._superseded: dict[int, float] = self._superseded_at_start()
        self._reissue: asyncio.Task[None] | None = None
        self._finish_at = 0.0
        self._blocked = ""
        self._lock = asyncio.Lock()  # one step at a time
        self.events: list[tuple[str, float]] = []  # (what, seconds it took), for operators
        # Called with the re-opened authority after a CA change (the gateway signs with
        # it; join tokens pin its newest root).
        self.on_authority: list[Callable[[Authority], None]] = []

    # -- node renewal (NodeGateway.Renew) -----------------------------------------------

    async def renew_node(
        self,
        node: control_pb2.NodeRecord,
        caller: Caller,
        request: gateway_pb2.RenewRequest,
        context: grpc.aio.ServicerContext,
    ) -> gateway_pb2.RenewResponse:
        """Sign the CSR's key for the calling node's recorded identity and addresses
        (the interceptor has checked the caller is that node, joined and unrevoked)."""
        try:
            issued = await asyncio.to_thread(
                self.authority.sign_csr,
                request.csr_pem,
                Kind.NODE,
                node.name,
                dns=list(node.dns),
                ips=list(node.ips),
                ttl=self.settings.node_cert_ttl,
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
            record.cert_expiry = issued.not_after
            record.cert_serial = f"{issued.serial:X}"
            record.issuer_ca = thumbprint(self.authority.intermediate)
            await self._state.save_node(record)
        # The certificate that asked, and the one recorded before (they may differ
        # after a crash between two renewals), become unusable after the grace.
        deadline = self._clock() + self.settings.superseded_grace
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
            trust_bundle=self.authority.trust_bundle(),
            not_after=issued.not_after,
        )

    async def renew_self(self, *, now: float | None = None) -> Issued:
        """Renew the orchestrator's own certificate; servers and the caller switch at once."""
        started = time.monotonic()
        previous = self.own.issued.serial
        issued = await asyncio.to_thread(self.own.renew, self.authority, now=now)
        self._caller.set_credentials(self.own.client_credentials(), issued.thumbprint)
        # Old channels finish their calls within nodecalls.CHANNEL_GRACE (shorter than
        # the grace), then the previous certificate is revoked like a node's.
        usable_until = self.supersede(previous) if previous != issued.serial else None
        await self._audit.record(
            "cert.renewed",
            kind="orchestrator",
            name=issued.identity.name,
            serial=f"{issued.serial:X}",
            not_after=issued.not_after,
            previous=f"{previous:X}",
            previous_usable_until=usable_until,
        )
        self.events.append(("orchestrator certificate renewed", time.monotonic() - started))
        return issued

    # -- revocation -----------------------------------------------------------------------

    async def revoke_node(
        self, name: str, *, by: str, reason: str = "key-compromise"
    ) -> control_pb2.NodeRecord:
        """Revoke every live certificate of node ``name`` and act on it everywhere."""
        if reason not in REVOCATION_REASONS:
            raise InvalidApplication(
                f"reason: {reason!r} is not one of {', '.join(REVOCATION_REASONS)}"
            )
        node = self._state.node(name)
        if node is None:
            raise NotFound(f"node {name} not found")
        try:
            serials = await asyncio.to_thread(self.authority.revoke, f"node/{name}", reason)
        except PKIError as exc:
            if node.state != "revoked" and "no unrevoked" not in str(exc):
                raise
            serials = []  # nothing live left to revoke: still make sure it is shut out
        await self._audit.record(
            "node.revoked", by=by, node=name, serials=[f"{s:X}" for s in serials], reason=reason
        )
        await self._apply_revocations(force=True)
        record = self._state.node(name)
        assert record is not None  # noqa: S101 - looked up above, nodes are never deleted
        return record

    def supersede(self, serial: int) -> float:
        """A node certificate replaced by a new one (renewal, rejoin): revoked one grace
        from now. Returns when."""
        return self._superseded.setdefault(serial, self._clock() + self.settings.superseded_grace)

    def _superseded_at_start(self) -> dict[int, float]:
        """Live node certificates that are not their node's current one (a renewal
        before a restart): revoked one grace from now."""
        now = self._clock()
        current = {n.cert_serial.upper() for n in self._state.all_nodes() if n.cert_serial}
        nodes = {n.name for n in self._state.all_nodes()}
        return {
            r.serial: now + self.settings.superseded_grace
            for r in self.authority.list()
            if r.kind is Kind.NODE
            and r.name in nodes
            and not r.revoked
            and r.not_after > now
            and f"{r.serial:X}" not in current
        }

    async def _retire_superseded(self, now: float) -> None:
        """Revoke (reason superseded) the previous certificates whose grace is over; the
        deny list carries them to every node in the same step."""
        due = [serial for serial, at in self._superseded.items() if now >= at]
        for serial in due:
            del self._superseded[serial]
            try:
                await asyncio.to_thread(self.authority.revoke, serial, "superseded")
            except PKIError as exc:
                log.warning("previous certificate %X stays: %s", serial, exc)
                continue
            await self._audit.record("cert.superseded", serial=f"{serial:X}")

    async def _apply_revocations(self, *, force: bool = False) -> None:
        revoked = self.revocations()
        if revoked == self._pushed_revoked and not force:
            return
        started = time.monotonic()
        self._pushed_revoked = revoked
        self._gateway.broadcast(self._gateway.trust_update())
        changed = False
        async with self._state.lock:
            for node in self._state.all_nodes():
                if node.state == "revoked" or not node.cert_serial:
                    continue
                if int(node.cert_serial, 16) in revoked:
                    node.state = "revoked"
                    await self._state.save_node(node)
                    changed = True
                    box = self._gateway.outboxes.get(node.name)
                    if box is not None:
                        # Ends its Report stream now (PERMISSION_DENIED), not at reconnect.
                        box.put_nowait(PermissionError("certificate revoked"))
                    log.warning("node %s revoked: its workloads move elsewhere", node.name)
        if changed:
            self._reconciler.wake()
        try:
            await asyncio.to_thread(write_crls, self.pki_dir)
        except CapstanError as exc:
            log.error("cannot regenerate the CRL: %s", exc)
        self.events.append(("revocation pushed", time.monotonic() - started))

    # -- trust pushes with acknowledgement ---------------------------------------------------

    async def push_trust(self, *, timeout: float | None = None) -> list[str]:
        """Push the current JWKS, deny list and bundle to every connected node and wait
        until each reports holding them; returns the nodes that did not in time."""
        message = self._gateway.trust_update()
        want = trust_digest(message.trust.jwks, message.trust.trust_bundle)
        names = sorted(self._gateway.outboxes)
        self._gateway.broadcast(message)
        deadline = time.monotonic() + (timeout or self.settings.ack_timeout)
        while True:
            connected = set(self._gateway.outboxes)
            missing = [
                n for n in names if n in connected and self._gateway.trust_digests.get(n) != want
            ]
            if not missing or time.monotonic() >= deadline:
                break
            await asyncio.sleep(0.05)
        if missing:
            log.warning("trust update not acknowledged in time by %s", ", ".join(missing))
        return missing

    # -- token keys -------------------------------------------------------------------------

    async def _token_keys(self, now: float) -> None:
        store = await asyncio.to_thread(TokenKeyStore.open, self._keys_path)
        current = self._minter.kid
        if store.active_kid != current:
            started = time.monotonic()
            # Staged: every node trusts the new key before the first token it signs.
            missing = await self.push_trust()
            self._minter.reload()
            self._retire[current] = now + self.settings.token_lifetime + self.settings.retire_margin
            await self._audit.record(
                "token_key.switched", kid=self._minter.kid, previous=current, unacked=missing
            )
            self.events.append(("token key switched", time.monotonic() - started))
        for kid, at in list(self._retire.items()):
            if now < at:
                continue
            del self._retire[kid]
            try:
                await asyncio.to_thread(store.retire, kid)
            except PKIError as exc:
                log.error("cannot retire token key %s: %s", kid, exc)
                continue
            await self.push_trust()
            await self._audit.record("token_key.retired", kid=kid)

    # -- CA rotation --------------------------------------------------------------------------

    async def _trust_bundle(self, now: float) -> None:
        try:
            bundle = (self.pki_dir / "ca.crt").read_bytes()
        except OSError as exc:
            log.error("cannot read the trust bundle: %s", exc)
            return
        if bundle == self._bundle:
            return
        started = time.monotonic()
        authority = await asyncio.to_thread(Authority.open, self.pki_dir)
        self.authority = authority
        for hook in self.on_authority:
            hook(authority)
        self._bundle = bundle
        rotation = rotation_status(self.pki_dir)
        cross = self.pki_dir / CROSS_CERT
        # The orchestrator first: trusting a new root early is harmless, and when the
        # old root goes, nothing it presents may still need it (the plain chain).
        self.own.present_cross(
            cross.read_bytes() if rotation is not None and cross.exists() else None
        )
        self.own.trust(bundle)
        self._caller.set_credentials(self.own.client_credentials(), self.own.issued.thumbprint)
        # Then the nodes: none may meet a leaf of the new CA before it trusts the new
        # root (the orchestrator's own renewal below waits for this).
        missing = await self.push_trust()
        await self._audit.record(
            "trust_bundle.pushed", roots=len(authority.trust_roots()), unacked=missing
        )
        self.events.append(("trust bundle pushed", time.monotonic() - started))
        if self._issuer_of_own() != thumbprint(authority.intermediate):
            await self.renew_self()

    def _issuer_of_own(self) -> str:
        for rec in self.authority.list():
            if rec.serial == self.own.issued.serial:
                return rec.issuer
        return ""

    async def reissue_nodes(self, issuer: str) -> None:
        """Ask nodes still signed by another CA to renew, a batch at a time, then finish
        the rotation if nothing in use depends on the old CA any more."""
        started = time.monotonic()
        pending = [
            n.name
            for n in self._state.all_nodes()
            if n.state not in ("revoked", "dead") and n.issuer_ca != issuer
        ]
        size = max(1, self.settings.batch)
        for i in range(0, len(pending), size):
            batch = pending[i : i + size]
            for name in batch:
                self._gateway.send(
                    name, gateway_pb2.GatewayMessage(sent_at=self._clock(), renew_now=True)
                )
            deadline = time.monotonic() + self.settings.batch_timeout
            while time.monotonic() < deadline:
                left = [
                    n
                    for n in batch
                    if (r := self._state.node(n)) is not None
                    and r.issuer_ca != issuer
                    and r.state not in ("revoked", "dead")
                ]
                if not left:
                    break
                await asyncio.sleep(0.05)
            else:
                log.warning("CA rotation: %s did not renew in time", ", ".join(left))
        self.events.append(("nodes re-issued", time.monotonic() - started))
        await self._audit.record("ca.reissued", nodes=len(pending))

    async def _ca_progress(self) -> None:
        """During a CA rotation: re-issue nodes still on the old CA, then finish it as
        soon as nothing in use depends on the old CA (retried every few seconds)."""
        if self._reissue is not None and not self._reissue.done():
            return
        rotation = rotation_status(self.pki_dir)
        if rotation is None or self._bundle != (self.pki_dir / "ca.crt").read_bytes():
            return
        issuer = rotation.new_intermediate
        pending = [
            n.name
            for n in self._state.all_nodes()
            if n.state not in ("revoked", "dead") and n.issuer_ca != issuer
        ]
        if pending:
            self._reissue = asyncio.create_task(self.reissue_nodes(issuer), name="ca-reissue")
            return
        if time.monotonic() < self._finish_at:
            return
        self._finish_at = time.monotonic() + 5.0
        try:
            await asyncio.to_thread(finish_rotation, self.pki_dir)
        except PKIError as exc:
            if str(exc) != self._blocked:
                log.warning("the old CA stays trusted: %s", exc)
                self._blocked = str(exc)
            return
        self._reissue = None
        self._blocked = ""
        await self._audit.record("ca.rotation_finished")
        # The next step sees the one-root bundle, presents the plain chain, pushes it.

    # -- the loop -------------------------------------------------------------------------------

    async def step(self, now: float | None = None) -> None:
        """One round of every check (revocations, own renewal, token keys, CA bundle)."""
        ts = self._clock() if now is None else now
        async with self._lock:
            await self._retire_superseded(ts)
            await self._apply_revocations()
            await self._trust_bundle(ts)
            await self._ca_progress()
            if ts >= self.own.renew_at:
                # ``now`` decides whether it is due; the certificate starts at real time.
                await self.renew_self()
            await self._token_keys(ts)

    async def run(self) -> None:
        await every(self.settings.period, self.step, "certificate lifecycle check")

    async def close(self) -> None:
        if self._reissue is not None:
            self._reissue.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reissue

    # -- status ------------------------------------------------------------------------------

    def status(self, now: float | None = None) -> control_pb2.PkiStatusResponse:
        ts = self._clock() if now is None else now
        records: dict[int, CertRecord] = {r.serial: r for r in self.authority.list()}
        out = control_pb2.PkiStatusResponse(
            signing_ca=thumbprint(self.authority.intermediate),
            trusted_roots=[thumbprint(r) for r in self.authority.trust_roots()],
        )
        rotation = rotation_status(self.pki_dir)
        if rotation is not None:
            left = [
                n.name
                for n in self._state.all_nodes()
                if n.state != "revoked" and n.issuer_ca != rotation.new_intermediate
            ]
            out.rotation = (
                f"overlap: old and new roots trusted; {len(left)} node(s) still on the old CA"
            )
        own = self.own.issued
        rows = [("orchestrator", own.identity.name, own.serial, "")]
        rows += [
            ("node", n.name, int(n.cert_serial, 16) if n.cert_serial else 0, n.state)
            for n in sorted(self._state.all_nodes(), key=lambda n: n.name)
        ]
        for kind, name, serial, node_state in rows:
            rec = records.get(serial)
            if rec is None:
                continue
            state = "revoked" if rec.revoked else renewal_state(rec.not_before, rec.not_after, ts)
            out.certificates.append(
                control_pb2.CertStatus(
                    kind=kind,
                    name=name,
                    serial=f"{serial:X}",
                    issuer_ca=rec.issuer,
                    not_before=rec.not_before,
                    not_after=rec.not_after,
                    renewal=state,
                    node_state=node_state,
                )
            )
            if state in ("overdue", "expired") and node_state != "revoked":
                left_h = (rec.not_after - ts) / 3600
                out.warnings.append(
                    f"{kind} {name}: certificate {state} "
                    + (f"(expires in {left_h:.1f} h)" if state == "overdue" else "")
                )
        inter_left = self.authority.intermediate.not_valid_after_utc.timestamp() - ts
        if inter_left < 30 * 86400:
            out.warnings.append(
                f"intermediate CA expires in {inter_left / 86400:.0f} days: rotate the CA"
            )
        try:
            store = TokenKeyStore.open(self._keys_path)
            for e in store.entries:
                if e.state != "retired":
                    note = " (signing)" if e.kid == self._minter.kid else ""
                    out.token_keys.append(f"{e.kid} {e.state}{note}")
        except CapstanError as exc:
            out.warnings.append(f"token keys: {exc}")
        return out
