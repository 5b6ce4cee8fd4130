"""Every capability token the orchestrator mints goes through here, and is audited.

Rules for who may receive which token live in the callers (reconciler, control API,
delegation); this module only signs and records.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from orchestrator import metrics
from orchestrator.audit import AuditLog
from pki.tokenkeys import TokenKeyStore
from pki.tokens import mint


class Minter:
    def __init__(
        self,
        keys: TokenKeyStore,
        *,
        issuer: str,
        audit: AuditLog,
        epoch: Callable[[], int],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._keys = keys
        self._signer = keys.signer()
        self.issuer = issuer
        self._audit = audit
        self._epoch = epoch
        self._clock = clock

    @property
    def epoch(self) -> int:
        """The leadership epoch the next token carries."""
        return self._epoch()

    @property
    def kid(self) -> str:
        """The kid of the key signing now (it changes only through ``reload``)."""
        return self._signer.kid

    def reload(self) -> None:
        """Pick up a rotated signing key."""
        self._keys = type(self._keys).open(self._keys.path)
        self._signer = self._keys.signer()

    async def mint(
        self,
        *,
        sub: str,
        cnf: str,
        aud: str,
        op: str,
        res: str,
        req: str | None = None,
        ttl: float,
        why: str,
        audit: bool = True,
    ) -> str:
        now = self._clock()
        token = mint(
            self._signer,
            iss=self.issuer,
            sub=sub,
            aud=aud,
            op=op,
            res=res,
            cnf=cnf,
            req=req,
            ttl=ttl,
            epoch=self._epoch(),
            now=now,
        )
        metrics.TOKENS_MINTED.labels(op=op).inc()
        if audit:
            await self._audit.record(
                "token.minted",
                sub=sub,
                aud=aud,
                op=op,
                res=res,
                ttl=ttl,
                why=why,
                kid=self._signer.kid,
            )
        return token
