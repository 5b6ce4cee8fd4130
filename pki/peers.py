"""Who is on the other end of an mTLS connection: one implementation for every server.

The node's and the orchestrator's authorization interceptors both start here: the one
peer certificate TLS verified, parsed into a Capstan identity of the expected trust
domain, refused when its serial is revoked. Identity and role come only from the
certificate (its SPIFFE URI SAN and role extension); nothing a caller sends in a
message can change them.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

from cryptography import x509

from pki.certs import identity_of, role_of, thumbprint
from pki.errors import CapstanError
from pki.identity import Kind, tenant_of

__all__ = ["Peer", "PeerRefused", "authenticate"]


@dataclass(frozen=True)
class Peer:
    """An authenticated caller, as its certificate says."""

    uri: str  # SPIFFE id
    kind: Kind
    name: str
    trust_domain: str
    role: str | None  # users only: admin, viewer, tenant:NAME
    thumbprint: str  # x5t#S256, what tokens bind to
    serial: int
    not_after: float  # Unix time the certificate expires

    @property
    def tenant(self) -> str | None:
        """The one tenant a tenant user is confined to; None for everyone else."""
        return tenant_of(self.role) if self.role else None


class PeerRefused(CapstanError):
    """The peer certificate is missing, unusable, of another trust domain, or revoked.

    ``reason`` is the coarse word for the caller; ``detail`` the precise cause, for the
    log and the audit trail only.
    """

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


@functools.lru_cache(maxsize=4096)
def _parse(pem: bytes) -> Peer:
    # Cached by the PEM bytes: certificate parsing must not sit on the per-call path.
    cert = x509.load_pem_x509_certificate(pem)
    ident = identity_of(cert)
    return Peer(
        uri=ident.uri,
        kind=ident.kind,
        name=ident.name,
        trust_domain=ident.trust_domain,
        role=role_of(cert),
        thumbprint=thumbprint(cert),
        serial=cert.serial_number,
        not_after=cert.not_valid_after_utc.timestamp(),
    )


def authenticate(
    pems: Sequence[bytes],
    *,
    trust_domain: str,
    revoked: Callable[[], Collection[int]],
) -> Peer:
    """The peer of a call from the certificates TLS verified (``x509_pem_cert`` of the
    gRPC auth context); PeerRefused unless there is exactly one, of a Capstan identity
    in ``trust_domain``, whose serial is not in ``revoked()``."""
    if len(pems) != 1:
        raise PeerRefused("no client certificate", "no peer certificate")
    try:
        peer = _parse(bytes(pems[0]))
    except (ValueError, CapstanError) as exc:
        raise PeerRefused("bad client certificate", f"unusable client certificate: {exc}") from None
    if peer.trust_domain != trust_domain:
        raise PeerRefused(
            "bad client certificate",
            f"peer identity {peer.uri} is outside trust domain {trust_domain}",
        )
    if peer.serial in revoked():
        raise PeerRefused(
            "certificate revoked", f"certificate serial {peer.serial:X} of {peer.uri} is revoked"
        )
    return peer
