"""X.509 builders for Capstan's root, intermediate and leaf certificates.

Only the authority calls these; every argument has been validated before. The
profile (extensions, criticality) is what cryptography's web-PKI verifier and
OpenSSL both accept, which the tests check against each.
"""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Sequence

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from pki.certs import ROLE_OID, encode_role
from pki.identity import Identity, Kind
from pki.lifetime import CLOCK_SKEW

IPAddr = ipaddress.IPv4Address | ipaddress.IPv6Address


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _utc(ts: float) -> datetime.datetime:
    # Whole seconds: X.509 times carry no fraction and round-trips must compare equal.
    return datetime.datetime.fromtimestamp(int(ts), tz=datetime.UTC)


def _ca_usage() -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=False,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=True,
        crl_sign=True,
        encipher_only=False,
        decipher_only=False,
    )


def _leaf_usage() -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )


def root_name(trust_domain: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, trust_domain),
            x509.NameAttribute(NameOID.COMMON_NAME, f"Capstan root CA {trust_domain}"),
        ]
    )


def intermediate_name(trust_domain: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, trust_domain),
            x509.NameAttribute(NameOID.COMMON_NAME, f"Capstan intermediate CA {trust_domain}"),
        ]
    )


def build_root(
    trust_domain: str, key: ec.EllipticCurvePrivateKey, *, now: float, ttl: float
) -> x509.Certificate:
    name = root_name(trust_domain)
    public = key.public_key()
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(_utc(now - CLOCK_SKEW))
        .not_valid_after(_utc(now + ttl))
        # pathlen 1: the root signs intermediates, which sign leaves only.
        .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
        .add_extension(_ca_usage(), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )


def build_intermediate(
    trust_domain: str,
    key: ec.EllipticCurvePrivateKey,
    root: x509.Certificate,
    root_key: ec.EllipticCurvePrivateKey,
    *,
    now: float,
    ttl: float,
) -> x509.Certificate:
    public = key.public_key()
    return (
        x509.CertificateBuilder()
        .subject_name(intermediate_name(trust_domain))
        .issuer_name(root.subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(_utc(now - CLOCK_SKEW))
        .not_valid_after(_utc(now + ttl))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_ca_usage(), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(root_key.public_key()),
            critical=False,
        )
        .sign(root_key, hashes.SHA256())
    )


def build_leaf(
    identity: Identity,
    public: ec.EllipticCurvePublicKey,
    issuer: x509.Certificate,
    issuer_key: ec.EllipticCurvePrivateKey,
    *,
    dns: Sequence[str],
    ips: Sequence[IPAddr],
    role: str | None,
    now: float,
    ttl: float,
    serial: int,
) -> x509.Certificate:
    eku = [ExtendedKeyUsageOID.CLIENT_AUTH]
    if identity.kind is not Kind.USER:
        eku.insert(0, ExtendedKeyUsageOID.SERVER_AUTH)
    sans: list[x509.GeneralName] = [x509.UniformResourceIdentifier(identity.uri)]
    sans += [x509.DNSName(d) for d in dns]
    sans += [x509.IPAddress(ip) for ip in ips]
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, identity.trust_domain),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, identity.kind.value),
            x509.NameAttribute(NameOID.COMMON_NAME, identity.name),
        ]
    )
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.subject)
        .public_key(public)
        .serial_number(serial)
        .not_valid_before(_utc(now - CLOCK_SKEW))
        .not_valid_after(_utc(now + ttl))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_leaf_usage(), critical=True)
        .add_extension(x509.ExtendedKeyUsage(eku), critical=False)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
            critical=False,
        )
    )
    if role is not None:
        builder = builder.add_extension(
            x509.UnrecognizedExtension(ROLE_OID, encode_role(role)), critical=False
        )
    return builder.sign(issuer_key, hashes.SHA256())
