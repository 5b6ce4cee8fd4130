"""Who a certificate speaks for: SPIFFE identities and user roles.

An identity is the URI ``spiffe://<trust-domain>/<kind>/<name>``. The patterns are
deliberately narrower than the SPIFFE spec allows: identities end up in token
claims, audit lines, file names and log output, so nothing that needs escaping,
normalising or case-folding is accepted anywhere.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from enum import StrEnum

from pki.errors import CertificateError

SPIFFE_SCHEME = "spiffe://"

# One DNS label, lowercase: node names, user names, tenant names.
NAME_PATTERN = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_NAME_RE = re.compile(rf"\A{NAME_PATTERN}\Z")
# Dot-separated lowercase labels; at most 253 characters like a DNS name.
_TRUST_DOMAIN_RE = re.compile(rf"\A{NAME_PATTERN}(?:\.{NAME_PATTERN})*\Z")
_TRUST_DOMAIN_MAX = 253
# Hostnames in DNS SANs follow the trust-domain shape (after lowercasing; no wildcards).
_DNS_RE = _TRUST_DOMAIN_RE

# Server certificates also carry their identity as a DNS name under this reserved
# suffix (.invalid never resolves, RFC 2606), because gRPC's TLS clients can check a
# DNS name during the handshake but not a URI SAN: a client that sets the expected
# name (grpc.ssl_target_name_override) refuses any other server before it sends a
# byte. The CA puts these names only into certificates of that identity.
IDENTITY_DNS_SUFFIX = "spiffe.invalid"

ROLE_ADMIN = "admin"
ROLE_VIEWER = "viewer"
TENANT_PREFIX = "tenant:"


class Kind(StrEnum):
    """What a certificate holder is; decides its EKU and what it may do."""

    ORCHESTRATOR = "orchestrator"
    NODE = "node"
    USER = "user"

    @property
    def is_server(self) -> bool:
        """Orchestrators and nodes serve gRPC; users are clients only."""
        return self is not Kind.USER


def validate_name(name: str, what: str = "name") -> str:
    """Return ``name`` if it is one lowercase DNS label, else raise CertificateError."""
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise CertificateError(
            f"invalid {what} {name!r}: use 1-63 lowercase letters, digits or '-', "
            "starting and ending with a letter or digit"
        )
    return name


def validate_trust_domain(trust_domain: str) -> str:
    """Return ``trust_domain`` if it is a lowercase dotted name, else raise CertificateError."""
    if (
        not isinstance(trust_domain, str)
        or len(trust_domain) > _TRUST_DOMAIN_MAX
        or not _TRUST_DOMAIN_RE.match(trust_domain)
    ):
        raise CertificateError(
            f"invalid trust domain {trust_domain!r}: use lowercase DNS labels separated by dots"
        )
    return trust_domain


def parse_kind(kind: str | Kind) -> Kind:
    """Return the Kind named by ``kind`` or raise CertificateError."""
    try:
        return Kind(kind)
    except ValueError:
        allowed = ", ".join(k.value for k in Kind)
        raise CertificateError(f"unknown kind {kind!r}: expected one of {allowed}") from None


def validate_role(role: str) -> str:
    """Return ``role`` if it is ``admin``, ``viewer`` or ``tenant:NAME``; else raise."""
    if role in (ROLE_ADMIN, ROLE_VIEWER):
        return role
    if isinstance(role, str) and role.startswith(TENANT_PREFIX):
        validate_name(role[len(TENANT_PREFIX) :], "tenant name")
        return role
    raise CertificateError(f"invalid role {role!r}: expected admin, viewer or tenant:NAME")


def tenant_of(role: str) -> str | None:
    """The tenant a ``tenant:NAME`` role is confined to; None for admin and viewer."""
    validate_role(role)
    return role[len(TENANT_PREFIX) :] if role.startswith(TENANT_PREFIX) else None


def validate_dns_name(name: str) -> str:
    """Return ``name`` lowercased if it is a plain hostname (no wildcard); else raise."""
    lowered = name.lower() if isinstance(name, str) else name
    if (
        not isinstance(lowered, str)
        or len(lowered) > _TRUST_DOMAIN_MAX
        or not _DNS_RE.match(lowered)
    ):
        raise CertificateError(f"invalid DNS name {name!r}")
    return lowered


def is_identity_dns_name(name: str) -> bool:
    """True for names under the reserved identity suffix (only the CA sets those)."""
    lowered = name.lower().rstrip(".")
    return lowered == IDENTITY_DNS_SUFFIX or lowered.endswith("." + IDENTITY_DNS_SUFFIX)


def kind_dns_name(trust_domain: str, kind: Kind) -> str:
    """The DNS name every server of ``kind`` in ``trust_domain`` carries: a client
    that may reach any orchestrator (HA) expects this one.

    Within one trust domain it cannot equal an identity's own name (``dns_name``):
    that has two labels before the trust domain, this one.
    """
    return _bounded(f"{kind.value}.{validate_trust_domain(trust_domain)}.{IDENTITY_DNS_SUFFIX}")


def _bounded(name: str) -> str:
    if len(name) > _TRUST_DOMAIN_MAX:
        raise CertificateError(
            f"identity name {name[:40]}... is longer than a DNS name may be; "
            "use a shorter trust domain"
        )
    return name


def canonical_host(value: str) -> str:
    """One spelling per host, for every comparison of names and addresses: an IP
    address in its compressed form (an IPv4-mapped IPv6 address as the IPv4 one), a
    DNS name lowercased without a trailing dot. Raises CertificateError."""
    if not isinstance(value, str):
        raise CertificateError(f"invalid host {value!r}")
    text = value.strip().strip("[]")
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return validate_dns_name(text.rstrip("."))
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


def parse_ip(value: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """Parse an IPv4 or IPv6 address or raise CertificateError."""
    try:
        return ipaddress.ip_address(value)
    except ValueError:
        raise CertificateError(f"invalid IP address {value!r}") from None


@dataclass(frozen=True)
class Identity:
    """A validated ``spiffe://<trust-domain>/<kind>/<name>`` identity."""

    trust_domain: str
    kind: Kind
    name: str

    def __post_init__(self) -> None:
        validate_trust_domain(self.trust_domain)
        # Frozen dataclass: coerce a plain string kind once, at construction.
        object.__setattr__(self, "kind", parse_kind(self.kind))
        validate_name(self.name, f"{self.kind.value} name")

    @property
    def uri(self) -> str:
        return f"{SPIFFE_SCHEME}{self.trust_domain}/{self.kind.value}/{self.name}"

    def __str__(self) -> str:
        return self.uri

    @property
    def dns_name(self) -> str:
        """This identity as a DNS name under the reserved suffix (see IDENTITY_DNS_SUFFIX):
        what a client expecting exactly this identity checks in the handshake."""
        return _bounded(f"{self.name}.{self.kind.value}.{self.trust_domain}.{IDENTITY_DNS_SUFFIX}")

    @classmethod
    def parse(cls, uri: str) -> Identity:
        """Parse a SPIFFE URI; anything but exactly ``spiffe://TD/KIND/NAME`` is refused."""
        if not isinstance(uri, str) or not uri.startswith(SPIFFE_SCHEME):
            raise CertificateError(f"not a spiffe identity: {uri!r}")
        parts = uri[len(SPIFFE_SCHEME) :].split("/")
        if len(parts) != 3:
            raise CertificateError(
                f"invalid spiffe identity {uri!r}: expected spiffe://TRUST-DOMAIN/KIND/NAME"
            )
        trust_domain, kind, name = parts
        try:
            return cls(trust_domain, parse_kind(kind), name)
        except CertificateError as exc:
            raise CertificateError(f"invalid spiffe identity {uri!r}: {exc}") from None
