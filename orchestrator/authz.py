"""Who is calling the orchestrator, and what their certificate lets them do.

Identity and role come only from the verified peer certificate (its SPIFFE URI SAN
and role extension); nothing in a request message can change them.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

import grpc
from cryptography import x509

from pki.certs import identity_of, role_of, thumbprint
from pki.errors import CapstanError
from pki.identity import Kind, tenant_of


class Access(StrEnum):
    READ = "read"  # admin, viewer, tenant (own tenant only)
    WRITE = "write"  # admin, tenant (own tenant only)
    ADMIN = "admin"  # admin only


@dataclass(frozen=True)
class Caller:
    uri: str
    kind: Kind
    name: str
    role: str | None
    thumbprint: str
    serial: int

    @property
    def tenant(self) -> str | None:
        """The one tenant this caller is confined to; None for admin and viewer."""
        return tenant_of(self.role) if self.role else None

    def may(self, access: Access, tenant: str | None = None) -> bool:
        if self.kind is not Kind.USER or not self.role:
            return False
        if self.role == "admin":
            return True
        if self.role == "viewer":
            return access is Access.READ
        own = self.tenant
        if own is None or access is Access.ADMIN:
            return False
        return tenant is None or tenant == own


class CallerRefused(CapstanError):
    """The peer is not a usable Capstan identity (UNAUTHENTICATED)."""


@functools.lru_cache(maxsize=4096)
def _parse(pem: bytes) -> Caller:
    cert = x509.load_pem_x509_certificate(pem)
    ident = identity_of(cert)
    return Caller(
        ident.uri, ident.kind, ident.name, role_of(cert), thumbprint(cert), cert.serial_number
    )


def caller_of(
    context: grpc.aio.ServicerContext,
    *,
    trust_domain: str,
    revoked: Callable[[], set[int] | frozenset[int]],
) -> Caller:
    pems = context.auth_context().get("x509_pem_cert") or []
    if len(pems) != 1:
        raise CallerRefused("no client certificate")
    try:
        caller = _parse(bytes(pems[0]))
    except (ValueError, CapstanError) as exc:
        raise CallerRefused(f"unusable client certificate: {exc}") from None
    if not caller.uri.startswith(f"spiffe://{trust_domain}/"):
        raise CallerRefused(f"{caller.uri} is outside trust domain {trust_domain}")
    if caller.serial in revoked():
        raise CallerRefused(f"certificate {caller.serial:X} of {caller.uri} is revoked")
    return caller
