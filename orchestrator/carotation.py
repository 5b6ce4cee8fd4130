"""CA rotation on a running orchestrator (after ``capstan pki rotate-ca``).

The two-root bundle is pushed and acknowledged first, then the orchestrator trusts it
itself, renews its own certificate, and asks the nodes to renew in batches
(``renew_now``); the old root is dropped when no leaf in use depends on it
(``pki.rotation.finish_rotation``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from orchestrator.audit import AuditLog
from orchestrator.ca import CurrentAuthority
from orchestrator.config import LifecycleSettings
from orchestrator.nodecalls import NodeCaller
from orchestrator.owncert import OwnCertificate
from orchestrator.state import ClusterState
from orchestrator.streams import NodeStreams
from orchestrator.trustpush import TrustPush
from pki.certs import thumbprint
from pki.errors import PKIError
from pki.rotation import CROSS_CERT, finish_rotation, open_settled, rotation_status
from protos import gateway_pb2

log = logging.getLogger("capstan.orchestrator.lifecycle")


class CaRotation:
    def __init__(
        self,
        *,
        pki_dir: Path,
        ca: CurrentAuthority,
        own: OwnCertificate,
        caller: NodeCaller,
        trust: TrustPush,
        streams: NodeStreams,
        state: ClusterState,
        audit: AuditLog,
        renew_own: Callable[[], Awaitable[object]],
        clock: Callable[[], float],
        settings: LifecycleSettings,
        events: list[tuple[str, float]],
    ) -> None:
        self._pki_dir = pki_dir
        self._ca = ca
        self._own = own
        self._caller = caller
        self._trust = trust
        self._streams = streams
        self._state = state
        self._audit = audit
        self._renew_own = renew_own
        self._clock = clock
        self._settings = settings
        self._events = events
        self._bundle = ca.authority.trust_bundle()
        self._reissue: asyncio.Task[None] | None = None
        self._finish_at = 0.0
        self._blocked = ""

    async def step(self) -> None:
        await self._trust_bundle()
        await self._progress()

    async def _trust_bundle(self) -> None:
        try:
            bundle = (self._pki_dir / "ca.crt").read_bytes()
        except OSError as exc:
            log.error("cannot read the trust bundle: %s", exc)
            return
        if bundle == self._bundle:
            return
        started = time.monotonic()
        # One consistent reading: `capstan pki rotate-ca` writes the bundle before the
        # new intermediate; taking the bundle with the old intermediate would sign
        # every node's renewal under the CA being retired, for good (regression).
        settled = await asyncio.to_thread(open_settled, self._pki_dir)
        if settled is None:
            log.info("the PKI directory is being changed; read again at the next step")
            return
        bundle, authority = settled
        if bundle == self._bundle:
            return
        self._ca.replace(authority)
        self._bundle = bundle
        rotation = rotation_status(self._pki_dir)
        cross = self._pki_dir / CROSS_CERT
        # The orchestrator first: trusting a new root early is harmless, and when the
        # old root goes, nothing it presents may still need it (the plain chain).
        self._own.present_cross(
            cross.read_bytes() if rotation is not None and cross.exists() else None
        )
        self._own.trust(bundle)
        self._caller.set_credentials(self._own.client_credentials(), self._own.issued.thumbprint)
        # Then the nodes: none may meet a leaf of the new CA before it trusts the new
        # root (the orchestrator's own renewal below waits for this).
        missing = await self._trust.push()
        await self._audit.record(
            "trust_bundle.pushed", roots=len(authority.trust_roots()), unacked=missing
        )
        self._events.append(("trust bundle pushed", time.monotonic() - started))
        if self._issuer_of_own() != thumbprint(authority.intermediate):
            await self._renew_own()

    def _issuer_of_own(self) -> str:
        for rec in self._ca.authority.list():
            if rec.serial == self._own.issued.serial:
                return rec.issuer
        return ""

    def _pending(self, issuer: str) -> list[str]:
        return [
            n.name
            for n in self._state.all_nodes()
            if n.state not in ("revoked", "dead") and n.issuer_ca != issuer
        ]

    async def reissue_nodes(self, issuer: str) -> None:
        """Ask nodes still signed by another CA to renew, a batch at a time."""
        started = time.monotonic()
        pending = self._pending(issuer)
        size = max(1, self._settings.batch)
        for i in range(0, len(pending), size):
            batch = pending[i : i + size]
            for name in batch:
                # Held until the node renews: asked again if its stream reconnects.
                self._streams.ask_renewal(
                    name, gateway_pb2.GatewayMessage(sent_at=self._clock(), renew_now=True)
                )
            deadline = time.monotonic() + self._settings.batch_timeout
            while time.monotonic() < deadline:
                left = [n for n in batch if n in self._pending(issuer)]
                if not left:
                    break
                await asyncio.sleep(0.05)
            else:
                log.warning("CA rotation: %s did not renew in time", ", ".join(left))
            for name in set(batch) - set(self._pending(issuer)):
                self._streams.renewal_done(name)
        self._events.append(("nodes re-issued", time.monotonic() - started))
        await self._audit.record("ca.reissued", nodes=len(pending))

    async def _progress(self) -> None:
        """During a CA rotation: re-issue nodes still on the old CA, then finish it as
        soon as nothing in use depends on the old CA (retried every few seconds)."""
        if self._reissue is not None and not self._reissue.done():
            return
        rotation = rotation_status(self._pki_dir)
        if rotation is None or self._bundle != (self._pki_dir / "ca.crt").read_bytes():
            return
        issuer = rotation.new_intermediate
        if self._pending(issuer):
            self._reissue = asyncio.create_task(self.reissue_nodes(issuer), name="ca-reissue")
            return
        if time.monotonic() < self._finish_at:
            return
        self._finish_at = time.monotonic() + 5.0
        try:
            await asyncio.to_thread(finish_rotation, self._pki_dir)
        except PKIError as exc:
            if str(exc) != self._blocked:
                log.warning("the old CA stays trusted: %s", exc)
                self._blocked = str(exc)
            return
        self._reissue = None
        self._blocked = ""
        await self._audit.record("ca.rotation_finished")
        # The next step sees the one-root bundle, presents the plain chain, pushes it.

    def finish_now(self) -> None:
        """Let the next step try to finish the rotation at once (no retry pause)."""
        self._finish_at = 0.0

    async def close(self) -> None:
        if self._reissue is not None:
            self._reissue.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reissue
