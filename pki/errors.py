"""Capstan's exception tree.

Every failure Capstan reports is a ``CapstanError``. Foreign errors (grpc, docker,
cryptography, OS) are mapped onto this tree at one boundary per component; callers
never see a bare library exception.

Token failures deliberately carry only a coarse ``reason`` meant for the remote
caller; the precise ``detail`` is for the local log and the audit trail (no oracle).
"""

from __future__ import annotations


class CapstanError(Exception):
    """Base of every error Capstan raises on purpose."""


class ConfigError(CapstanError):
    """A file, flag or directory given to Capstan is missing, unreadable or malformed."""


class PKIError(CapstanError):
    """A PKI operation failed (state, issuance, revocation, rotation)."""


class PKIStateError(PKIError):
    """The PKI directory is missing, incomplete or corrupted."""


class PKIExistsError(PKIError):
    """A PKI (or a key) already exists where a new one was asked for."""


class CertificateError(PKIError):
    """A certificate failed verification (chain, EKU, SAN, validity, revocation)."""


class TokenError(CapstanError):
    """A capability token was refused.

    ``reason`` is the coarse, caller-safe word (``invalid``, ``expired``, ``replayed``,
    ``not for this node``, ``wrong operation``...); ``detail`` is the precise cause,
    for logs and audit only.
    """

    reason: str = "invalid"

    def __init__(self, detail: str, *, reason: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        if reason is not None:
            self.reason = reason

    def __str__(self) -> str:
        return f"{self.reason}: {self.detail}"


class InvalidToken(TokenError):
    """The token is malformed, badly signed, from an unknown key, or untimely (UNAUTHENTICATED)."""

    reason = "invalid"


class ExpiredToken(InvalidToken):
    """The token's lifetime is over or has not begun (UNAUTHENTICATED)."""

    reason = "expired"


class ReplayedToken(InvalidToken):
    """The token's jti was already accepted once (UNAUTHENTICATED)."""

    reason = "replayed"


class TokenNotPermitted(TokenError):
    """A genuine token that does not grant this call (PERMISSION_DENIED)."""

    reason = "not permitted"


class WrongAudience(TokenNotPermitted):
    """The token was minted for another node."""

    reason = "not for this node"


class WrongCaller(TokenNotPermitted):
    """The token is bound to another certificate or identity than the caller's."""

    reason = "not for this caller"


class WrongOperation(TokenNotPermitted):
    """The token names another operation than the one called."""

    reason = "wrong operation"


class WrongResource(TokenNotPermitted):
    """The token names another resource or other request parameters."""

    reason = "wrong resource"


class StaleEpoch(TokenNotPermitted):
    """The token comes from an older orchestrator leadership epoch."""

    reason = "stale epoch"
