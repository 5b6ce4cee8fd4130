"""Token-key rotation, staged: a new active key in the key store is pushed to every
node first; the minter signs with it only once every connected node acknowledged the
new JWKS; the old key is retired once the last token it signed has expired."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

from orchestrator.audit import AuditLog
from orchestrator.config import LifecycleSettings
from orchestrator.minter import Minter
from orchestrator.trustpush import TrustPush
from pki.errors import PKIError
from pki.tokenkeys import TokenKeyStore

log = logging.getLogger("capstan.orchestrator.lifecycle")


class TokenKeyRotation:
    def __init__(
        self,
        *,
        keys_path: Path,
        minter: Minter,
        trust: TrustPush,
        audit: AuditLog,
        settings: LifecycleSettings,
        events: list[tuple[str, float]],
    ) -> None:
        self._keys_path = keys_path
        self._minter = minter
        self._trust = trust
        self._audit = audit
        self._settings = settings
        self._events = events
        self._retire: dict[str, float] = {}  # token kid -> when its last token expired

    async def step(self, now: float) -> None:
        store = await asyncio.to_thread(TokenKeyStore.open, self._keys_path)
        current = self._minter.kid
        if store.active_kid != current:
            started = time.monotonic()
            # Staged: every node trusts the new key before the first token it signs.
            missing = await self._trust.push()
            self._minter.reload()
            self._retire[current] = (
                now + self._settings.token_lifetime + self._settings.retire_margin
            )
            await self._audit.record(
                "token_key.switched", kid=self._minter.kid, previous=current, unacked=missing
            )
            self._events.append(("token key switched", time.monotonic() - started))
        for kid, at in list(self._retire.items()):
            if now < at:
                continue
            del self._retire[kid]
            try:
                await asyncio.to_thread(store.retire, kid)
            except PKIError as exc:
                log.error("cannot retire token key %s: %s", kid, exc)
                continue
            await self._trust.push()
            await self._audit.record("token_key.retired", kid=kid)
