"""The trust material every node holds: the token keys (JWKS), the deny list and the
CA bundle. Sent on every Report stream as it opens and pushed to all connected nodes
when it changes; a node acknowledges what it holds by its trust digest."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable

from orchestrator.ca import CurrentAuthority
from orchestrator.config import LifecycleSettings
from orchestrator.errors import NotLeader
from orchestrator.streams import NodeStreams
from pki.tokenkeys import TokenKeyStore
from protos import gateway_pb2
from protos.wire.trust import format_deny_list, sign_trust_update, trust_digest

log = logging.getLogger("capstan.orchestrator.lifecycle")


class TrustPush:
    def __init__(
        self,
        *,
        streams: NodeStreams,
        ca: CurrentAuthority,
        token_keys: Callable[[], TokenKeyStore],
        revoked: Callable[[], frozenset[int]],
        clock: Callable[[], float],
        settings: LifecycleSettings,
        epoch: Callable[[], int],
    ) -> None:
        self._streams = streams
        self._ca = ca
        self._token_keys = token_keys
        self._revoked = revoked
        self._clock = clock
        self._settings = settings
        self._epoch = epoch  # the leadership's; NotLeader once it ended

    def jwks(self) -> bytes:
        return json.dumps(self._token_keys().jwks()).encode()

    def deny_list(self) -> bytes:
        return format_deny_list(self._revoked())

    def update(self) -> gateway_pb2.GatewayMessage:
        """The current JWKS, deny list and bundle, signed by every token key held (a
        node applies it only when signed by a key it already trusts)."""
        keys = self._token_keys()
        try:
            epoch = self._epoch()
        except NotLeader:
            epoch = 0  # a deposed leader's update sorts before the new leader's
        now = self._clock()
        update = gateway_pb2.TrustUpdate(
            jwks=json.dumps(keys.jwks()).encode(),
            deny_list=self.deny_list(),
            trust_bundle=self._ca.authority.trust_bundle(),
            epoch=epoch,
            issued_at_ms=int(now * 1000),
        )
        sign_trust_update(update, keys.signers())
        return gateway_pb2.GatewayMessage(sent_at=now, trust=update)

    def broadcast(self) -> None:
        self._streams.broadcast(self.update())

    async def push(self, *, timeout: float | None = None) -> list[str]:
        """Push to every connected node and wait until each reports holding it; returns
        the nodes that did not in time."""
        message = self.update()
        want = trust_digest(message.trust.jwks, message.trust.trust_bundle)
        names = self._streams.connected()
        self._streams.broadcast(message)
        deadline = time.monotonic() + (timeout or self._settings.ack_timeout)
        while True:
            connected = set(self._streams.connected())
            missing = [n for n in names if n in connected and self._streams.acknowledged(n) != want]
            if not missing or time.monotonic() >= deadline:
                break
            await asyncio.sleep(0.05)
        if missing:
            log.warning("trust update not acknowledged in time by %s", ", ".join(missing))
        return missing
