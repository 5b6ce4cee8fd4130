"""Certificate and key lifecycle on a running orchestrator, without downtime: one
check loop over the jobs, each in its own module.

- **Its own certificate** (``orchestrator.owncert``): served through gRPC's dynamic
  server credentials and renewed at about 2/3 of its life; the node caller switches
  to the new client certificate at the same moment (``renew_self``).
- **Node certificates** (``orchestrator.nodecerts``, behind Join and Renew).
- **Revocation** (``orchestrator.revocations``).
- **Token-key rotation** (``orchestrator.keyrotation``), staged.
- **CA rotation** (``orchestrator.carotation``).
- **Status** (``orchestrator.pkistatus``).

``step(now)`` runs one round of every check; ``run()`` calls it on a timer. Tests call
``step`` with an advanced clock instead of waiting.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from orchestrator._periodic import every
from orchestrator.ca import CurrentAuthority
from orchestrator.carotation import CaRotation
from orchestrator.config import LifecycleSettings
from orchestrator.keyrotation import TokenKeyRotation
from orchestrator.nodecerts import NodeCertificates
from orchestrator.owncert import SelfRenewal
from orchestrator.revocations import Revoker
from pki.authority import Authority, Issued

__all__ = ["Lifecycle"]


class Lifecycle:
    def __init__(
        self,
        *,
        ca: CurrentAuthority,
        self_renewal: SelfRenewal,
        revoker: Revoker,
        keys: TokenKeyRotation,
        ca_rotation: CaRotation,
        node_certs: NodeCertificates,
        settings: LifecycleSettings,
        events: list[tuple[str, float]],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._ca = ca
        self.self_renewal = self_renewal
        self.own = self_renewal.own
        self.revoker = revoker
        self.keys = keys
        self.ca_rotation = ca_rotation
        self.node_certs = node_certs
        self.settings = settings
        self.events = events  # (what, seconds it took), for operators
        self._clock = clock
        self._lock = asyncio.Lock()  # one step at a time

    @property
    def authority(self) -> Authority:
        """The authority that signs now (re-opened after a CA rotation)."""
        return self._ca.authority

    async def renew_self(self, *, now: float | None = None) -> Issued:
        """Renew the orchestrator's own certificate now."""
        return await self.self_renewal(now=now)

    async def step(self, now: float | None = None) -> None:
        """One round of every check (revocations, CA bundle, own renewal, token keys)."""
        ts = self._clock() if now is None else now
        async with self._lock:
            await self.node_certs.retire_superseded(ts)
            await self.revoker.apply()
            await self.ca_rotation.step()
            if self.self_renewal.due(ts):
                # ``now`` decides whether it is due; the certificate starts at real time.
                await self.renew_self()
            await self.keys.step(ts)

    async def run(self) -> None:
        await every(self.settings.period, self.step, "certificate lifecycle check")

    async def close(self) -> None:
        await self.ca_rotation.close()
