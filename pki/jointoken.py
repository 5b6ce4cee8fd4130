"""One-time join tokens: ``CJ1.<secret>.<ca-pin>``, one strict parser for both sides.

The secret is 32 random bytes and the pin the SHA-256 of the cluster root's DER, both
in canonical unpadded base64url (43 characters). The orchestrator mints a token and
stores only the secret's digest; the node refuses to send a token to a server whose
roots do not match the pin. Error messages never repeat the token: it is a credential.
"""

from __future__ import annotations

import base64
import secrets
from typing import NamedTuple

from cryptography import x509

from pki.certs import thumbprint
from pki.errors import ConfigError

__all__ = ["PREFIX", "JoinToken", "ca_pin", "new_join_token", "parse_join_token"]

PREFIX = "CJ1"


class JoinToken(NamedTuple):
    secret: str
    ca_pin: str

    def __str__(self) -> str:
        return f"{PREFIX}.{self.secret}.{self.ca_pin}"


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _is_b64url_32(value: str) -> bool:
    """Whether ``value`` is the canonical unpadded base64url of 32 bytes."""
    if len(value) != 43 or not value.isascii():
        return False
    try:
        raw = base64.urlsafe_b64decode(value + "=")
    except ValueError:
        return False
    # The decoder ignores stray bits and characters; only the canonical form is accepted.
    return len(raw) == 32 and _b64(raw) == value


def parse_join_token(token: str) -> JoinToken:
    """Split ``CJ1.<secret>.<capin>``; ConfigError naming the malformed part otherwise.

    Surrounding whitespace (a token pasted from a file) is ignored; nothing else is.
    """
    if not isinstance(token, str):
        raise ConfigError("join token must be a string")
    parts = token.strip().split(".")
    if len(parts) != 3 or parts[0] != PREFIX:
        raise ConfigError(f"join token is malformed: expected {PREFIX}.<secret>.<ca pin>")
    secret, pin = parts[1], parts[2]
    if not _is_b64url_32(secret):
        raise ConfigError("join token secret is malformed: expected 43 base64url characters")
    if not _is_b64url_32(pin):
        raise ConfigError("join token CA pin is malformed: expected 43 base64url characters")
    return JoinToken(secret, pin)


def new_join_token(pin: str) -> JoinToken:
    """A fresh token for the cluster whose root has pin ``pin``."""
    if not _is_b64url_32(pin):
        raise ConfigError("CA pin is malformed: expected 43 base64url characters")
    return JoinToken(_b64(secrets.token_bytes(32)), pin)


def ca_pin(cert: x509.Certificate) -> str:
    """The pin a join token carries for ``cert``: base64url(SHA-256(DER)), unpadded."""
    return thumbprint(cert)
