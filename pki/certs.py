"""Reading and verifying Capstan certificates.

This is the one place that decides whether a certificate speaks for an identity:
the chain is checked by cryptography's X.509 verifier (RFC 5280 path building,
validity, CA constraints, EKU), then Capstan's own rules are applied on top:
ECDSA P-256 keys, exactly one SPIFFE URI SAN in our trust domain, EKU matching the
kind, a well-formed role on user certificates and none elsewhere, and a deny list
of revoked serials.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import ipaddress
from collections.abc import Iterable, Sequence
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from pki.errors import CertificateError
from pki.identity import SPIFFE_SCHEME, Identity, Kind, validate_role, validate_trust_domain

# Capstan's private OID arc: 2.25 is the X.667 arc for OIDs derived from a UUID,
# so no registration is needed (UUID 4a935dac-b48d-465d-812d-08c4a5a9bfe9).
CAPSTAN_OID_ARC = "2.25.99128039273503578914008079064847990761"
# Non-critical extension holding a user's role as a DER UTF8String. A private
# extension (rather than a second URI SAN) keeps the SAN list to the single URI
# that SPIFFE verifiers, gRPC's included, insist on.
ROLE_OID = x509.ObjectIdentifier(f"{CAPSTAN_OID_ARC}.1")

Purpose = Literal["client", "server"]

_UTF8STRING_TAG = 0x0C
_CURVE_NAMES = {"secp256r1": "ECDSA P-256", "secp384r1": "ECDSA P-384", "secp521r1": "ECDSA P-521"}


def thumbprint(cert: x509.Certificate) -> str:
    """RFC 8705 ``x5t#S256``: base64url, unpadded, of the SHA-256 of the certificate's DER."""
    digest = hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def encode_role(role: str) -> bytes:
    """DER UTF8String of a validated role: the value of the role extension."""
    data = validate_role(role).encode("ascii")
    # Roles are at most "tenant:" + 63 characters, so the short length form suffices.
    if len(data) > 127:
        raise CertificateError(f"role {role!r} is too long")
    return bytes([_UTF8STRING_TAG, len(data)]) + data


def decode_role(value: bytes) -> str:
    """Inverse of encode_role; anything but one short UTF8String holding a valid role is refused."""
    if len(value) < 2 or value[0] != _UTF8STRING_TAG or len(value) != 2 + value[1]:
        raise CertificateError("certificate role extension is malformed")
    try:
        role = value[2:].decode("ascii")
    except UnicodeDecodeError:
        raise CertificateError("certificate role extension is malformed") from None
    try:
        return validate_role(role)
    except CertificateError as exc:
        raise CertificateError(f"certificate carries an {exc}") from None


def _san(cert: x509.Certificate) -> x509.SubjectAlternativeName | None:
    try:
        return cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None
    except ValueError as exc:  # duplicate or undecodable extensions
        raise CertificateError(f"certificate extensions are malformed: {exc}") from None


def spiffe_uris(cert: x509.Certificate) -> list[str]:
    """Every URI SAN with the spiffe scheme (case-insensitively, so none slips past)."""
    san = _san(cert)
    if san is None:
        return []
    uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    return [u for u in uris if u[: len(SPIFFE_SCHEME)].lower() == SPIFFE_SCHEME]


def identity_of(cert: x509.Certificate) -> Identity:
    """The certificate's identity: its one and only spiffe URI SAN, strictly parsed."""
    uris = spiffe_uris(cert)
    if not uris:
        raise CertificateError("certificate has no spiffe URI SAN")
    if len(uris) > 1:
        raise CertificateError(f"certificate has {len(uris)} spiffe URI SANs; only one is allowed")
    return Identity.parse(uris[0])


def role_of(cert: x509.Certificate) -> str | None:
    """The role carried by a (user) certificate, or None when it carries none."""
    try:
        ext = cert.extensions.get_extension_for_oid(ROLE_OID)
    except x509.ExtensionNotFound:
        return None
    except ValueError as exc:
        raise CertificateError(f"certificate extensions are malformed: {exc}") from None
    value = ext.value
    if not isinstance(value, x509.UnrecognizedExtension):
        raise CertificateError("certificate role extension is malformed")
    return decode_role(value.value)


def trust_domain_of_root(cert: x509.Certificate) -> str:
    """The trust domain a Capstan root CA certificate names (its Organization)."""
    names = cert.subject.get_attributes_for_oid(x509.NameOID.ORGANIZATION_NAME)
    if len(names) != 1 or not isinstance(names[0].value, str):
        raise CertificateError("the CA certificate names no single trust domain")
    return validate_trust_domain(names[0].value)


def dns_names(cert: x509.Certificate) -> list[str]:
    san = _san(cert)
    return [] if san is None else list(san.get_values_for_type(x509.DNSName))


def ip_addresses(cert: x509.Certificate) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    san = _san(cert)
    if san is None:
        return []
    return [
        ip
        for ip in san.get_values_for_type(x509.IPAddress)
        if not isinstance(ip, ipaddress.IPv4Network | ipaddress.IPv6Network)
    ]


def extended_key_usage(cert: x509.Certificate) -> list[x509.ObjectIdentifier]:
    """The certificate's EKU OIDs; an empty list when the extension is absent."""
    try:
        return list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    except x509.ExtensionNotFound:
        return []
    except ValueError as exc:
        raise CertificateError(f"certificate extensions are malformed: {exc}") from None


def key_description(cert: x509.Certificate) -> str:
    """A short name of the certificate's key type, for messages and ``pki inspect``."""
    try:
        key = cert.public_key()
    except (ValueError, TypeError):
        return "unsupported key"
    if isinstance(key, ec.EllipticCurvePublicKey):
        return _CURVE_NAMES.get(key.curve.name, f"ECDSA {key.curve.name}")
    if isinstance(key, ed25519.Ed25519PublicKey):
        return "Ed25519"
    if isinstance(key, ed448.Ed448PublicKey):
        return "Ed448"
    if isinstance(key, rsa.RSAPublicKey):
        return f"RSA {key.key_size}"
    return type(key).__name__


def is_p256(cert: x509.Certificate) -> bool:
    try:
        key = cert.public_key()
    except (ValueError, TypeError):
        return False
    return isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1)


def load_pem_chain(data: bytes, what: str = "certificate file") -> list[x509.Certificate]:
    """Every certificate in a PEM bundle, in file order; at least one, all well-formed."""
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError:
        # cryptography's message points at its FAQ; the operator needs the file named.
        raise CertificateError(f"{what} holds no readable PEM certificate") from None
    if not certs:
        raise CertificateError(f"{what} holds no readable PEM certificate")
    return certs


def _utc(now: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(now, tz=datetime.UTC)


def _check_validity(cert: x509.Certificate, now: float, what: str) -> None:
    when = _utc(now)
    if when < cert.not_valid_before_utc:
        start = cert.not_valid_before_utc.isoformat()
        raise CertificateError(f"{what} is not valid before {start}")
    if when > cert.not_valid_after_utc:
        raise CertificateError(f"{what} expired at {cert.not_valid_after_utc.isoformat()}")


class ChainVerifier:
    """Verifies that a certificate chain speaks for a Capstan identity of this trust domain.

    ``trust_roots`` is a list so that a CA rotation can trust old and new roots side
    by side. The set of revoked serials is replaceable at any time
    (``set_revoked``): the orchestrator pushes its deny list and every verification
    after the swap honours it.
    """

    def __init__(
        self,
        trust_roots: Sequence[x509.Certificate],
        trust_domain: str,
        *,
        revoked: Iterable[int] = (),
    ) -> None:
        if not trust_roots:
            raise CertificateError("no trust roots given")
        self._roots = list(trust_roots)
        self._store = Store(self._roots)
        self.trust_domain = validate_trust_domain(trust_domain)
        self._revoked: frozenset[int] = frozenset(revoked)

    @property
    def trust_roots(self) -> list[x509.Certificate]:
        return list(self._roots)

    @property
    def revoked(self) -> frozenset[int]:
        return self._revoked

    def set_revoked(self, serials: Iterable[int]) -> None:
        """Replace the deny list; one atomic reference swap, safe against concurrent verify()."""
        self._revoked = frozenset(serials)

    def verify(
        self,
        leaf: x509.Certificate,
        intermediates: Sequence[x509.Certificate] = (),
        *,
        purpose: Purpose,
        now: float,
        server_name: str | None = None,
    ) -> Identity:
        """Return the leaf's identity if the chain is acceptable for ``purpose`` at ``now``.

        ``purpose="client"``: the leaf authenticates as a TLS client (any kind).
        ``purpose="server"``: the leaf serves TLS; only orchestrators and nodes may,
        and the leaf must carry ``server_name`` (a DNS name or IP) when one is given.
        Raises CertificateError with the precise reason otherwise.
        """
        if purpose not in ("client", "server"):
            raise CertificateError(f"unknown verification purpose {purpose!r}")
        # Capstan's own rules first: they give precise reasons, and none of them
        # depends on trusting the certificate's content beyond reading it.
        if not is_p256(leaf):
            raise CertificateError(f"certificate key is {key_description(leaf)}, not ECDSA P-256")
        _check_validity(leaf, now, "certificate")
        if leaf.serial_number in self._revoked:
            raise CertificateError(f"certificate serial {leaf.serial_number:x} is revoked")
        identity = identity_of(leaf)
        if identity.trust_domain != self.trust_domain:
            raise CertificateError(
                f"certificate identity {identity.uri} belongs to trust domain "
                f"{identity.trust_domain!r}, not {self.trust_domain!r}"
            )
        self._check_eku(leaf, identity.kind)
        self._check_role(leaf, identity.kind)
        if purpose == "server" and not identity.kind.is_server:
            raise CertificateError(f"a {identity.kind.value} certificate cannot act as a server")

        chain = self._verify_chain(leaf, list(intermediates), purpose, now, server_name)
        for cert in chain[1:]:
            if cert.serial_number in self._revoked:
                raise CertificateError(f"CA certificate serial {cert.serial_number:x} is revoked")
        return identity

    @staticmethod
    def _check_eku(leaf: x509.Certificate, kind: Kind) -> None:
        eku = extended_key_usage(leaf)
        if not eku:
            raise CertificateError("certificate has no extended key usage")
        has_server = ExtendedKeyUsageOID.SERVER_AUTH in eku
        has_client = ExtendedKeyUsageOID.CLIENT_AUTH in eku
        if ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE in eku:
            raise CertificateError("certificate has the anyExtendedKeyUsage EKU")
        if kind.is_server:
            if not (has_server and has_client):
                raise CertificateError(
                    f"{kind.value} certificate must have both serverAuth and clientAuth EKU"
                )
        else:
            if has_server:
                raise CertificateError(f"{kind.value} certificate must not have serverAuth EKU")
            if not has_client:
                raise CertificateError(f"{kind.value} certificate must have clientAuth EKU")

    @staticmethod
    def _check_role(leaf: x509.Certificate, kind: Kind) -> None:
        role = role_of(leaf)
        if kind is Kind.USER and role is None:
            raise CertificateError("user certificate carries no role")
        if kind is not Kind.USER and role is not None:
            raise CertificateError(f"{kind.value} certificate must not carry a role")

    def _verify_chain(
        self,
        leaf: x509.Certificate,
        intermediates: list[x509.Certificate],
        purpose: Purpose,
        now: float,
        server_name: str | None,
    ) -> list[x509.Certificate]:
        builder = PolicyBuilder().store(self._store).time(_utc(now))
        try:
            if purpose == "client":
                return builder.build_client_verifier().verify(leaf, intermediates).chain
            subject = self._server_subject(leaf, server_name)
            return builder.build_server_verifier(subject).verify(leaf, intermediates)
        except VerificationError as exc:
            raise CertificateError(f"certificate chain does not verify: {exc}") from None
        except ValueError as exc:
            raise CertificateError(f"certificate cannot be verified: {exc}") from None

    @staticmethod
    def _server_subject(
        leaf: x509.Certificate, server_name: str | None
    ) -> x509.DNSName | x509.IPAddress:
        if server_name is not None:
            try:
                return x509.IPAddress(ipaddress.ip_address(server_name))
            except ValueError:
                return x509.DNSName(server_name)
        # Without an expected name, still run the library's server checks (EKU,
        # chain) against a name the leaf claims: identity comes from the SPIFFE SAN.
        names = dns_names(leaf)
        if names:
            return x509.DNSName(names[0])
        ips = ip_addresses(leaf)
        if ips:
            return x509.IPAddress(ips[0])
        raise CertificateError("server certificate carries no DNS or IP SAN")
