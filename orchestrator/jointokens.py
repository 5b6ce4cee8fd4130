"""Issuing and consuming one-time join tokens (format: ``pki.jointoken``).

Only the SHA-256 of the secret is stored; a token is consumed by deleting its record
in a compare-and-swap, so two nodes racing with one token cannot both join.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass, field

from orchestrator.errors import OrchestratorError
from orchestrator.store import Store, keys
from pki.errors import ConfigError
from pki.jointoken import new_join_token, parse_join_token


class JoinRefused(OrchestratorError):
    """The join token is unknown, used, expired, or bound to another name (PERMISSION_DENIED)."""


@dataclass
class JoinGrant:
    name: str  # bound node name, "" = the node's requested name
    pool: str
    labels: dict[str, str] = field(default_factory=dict)
    expires_at: float = 0.0
    # Capacity the admin recorded; a node reporting more gets this (0 = no cap).
    cpus: float = 0.0
    memory: int = 0
    rejoin: bool = False  # lets an existing node name join again (expired-node recovery)
    # The node's own sandbox ceiling (SandboxPolicy, serialized); "" = its pool's at join.
    policy: str = ""


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


async def create(store: Store, grant: JoinGrant, *, ca_pin: str) -> str:
    token = new_join_token(ca_pin)
    body = json.dumps(grant.__dict__, sort_keys=True).encode()
    await store.put(keys.join_token(_digest(token.secret)), body, expect_revision=0)
    return str(token)


async def consume(store: Store, token: str, *, ca_pin: str, now: float) -> JoinGrant:
    try:
        parsed = parse_join_token(token)
    except ConfigError:
        raise JoinRefused("malformed join token") from None
    if not hmac.compare_digest(parsed.ca_pin, ca_pin):
        raise JoinRefused("join token pins another cluster CA")
    key = keys.join_token(_digest(parsed.secret))
    entry = await store.get(key)
    if entry is None:
        raise JoinRefused("unknown or already used join token")
    # Consumed before use: the delete succeeds for exactly one caller.
    try:
        await store.delete(key, expect_revision=entry.revision)
    except OrchestratorError:
        raise JoinRefused("join token already used") from None
    grant = JoinGrant(**json.loads(entry.value))
    if grant.expires_at <= now:
        raise JoinRefused("join token expired")
    return grant
