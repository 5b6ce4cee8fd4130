"""One-time join tokens: ``CJ1.<secret>.<ca-pin>``.

Only the SHA-256 of the secret is stored; a token is consumed by deleting its record
in a compare-and-swap, so two nodes racing with one token cannot both join.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass, field

from orchestrator.errors import OrchestratorError
from orchestrator.store import Store, keys

PREFIX = "CJ1"


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


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


async def create(store: Store, grant: JoinGrant, *, ca_pin: str) -> str:
    secret = _b64(secrets.token_bytes(32))
    body = json.dumps(grant.__dict__, sort_keys=True).encode()
    await store.put(keys.join_token(_digest(secret)), body, expect_revision=0)
    return f"{PREFIX}.{secret}.{ca_pin}"


async def consume(store: Store, token: str, *, ca_pin: str, now: float) -> JoinGrant:
    parts = token.split(".")
    if len(parts) != 3 or parts[0] != PREFIX or len(parts[1]) != 43:
        raise JoinRefused("malformed join token")
    if not hmac.compare_digest(parts[2], ca_pin):
        raise JoinRefused("join token pins another cluster CA")
    key = keys.join_token(_digest(parts[1]))
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
