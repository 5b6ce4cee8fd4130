"""Certificates for etcd: member (server and peer) and client pairs, from a CA of
their own.

etcd with ``--client-cert-auth`` admits any client whose certificate chains to the
CA it trusts. If that were the cluster CA, every node's certificate would open the
whole store to that node. So etcd gets a separate CA under ``<pki>/etcd/``: only
its members and the orchestrators' client certificates chain to it, and no Capstan
server accepts it (it is in no trust bundle).

Files (keys 0600, never overwritten without ``force``)::

    etcd/ca.crt  etcd/ca.key
    etcd/<member>.crt  etcd/<member>.key   serverAuth + clientAuth, IP/DNS SANs
    etcd/client-<name>.crt  etcd/client-<name>.key   clientAuth only
"""

from __future__ import annotations

import datetime
import ipaddress
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from pki._build import cert_pem, key_pem, new_key
from pki.errors import ConfigError
from pki.files import atomic_write, read_file, write_private_key
from pki.identity import validate_name
from pki.lifetime import CLOCK_SKEW

DEFAULT_TTL = 365 * 24 * 3600.0


@dataclass(frozen=True)
class EtcdFiles:
    """The PEM paths of one pair and the CA that signed it."""

    ca: Path
    cert: Path
    key: Path


def etcd_dir(pki_dir: Path) -> Path:
    return Path(pki_dir) / "etcd"


def _utc(ts: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(int(ts), tz=datetime.UTC)


def _usage(ca: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not ca,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def _ca(
    directory: Path, *, now: float, force: bool
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    crt, key_path = directory / "ca.crt", directory / "ca.key"
    if crt.exists() and key_path.exists() and not force:
        cert = x509.load_pem_x509_certificate(read_file(crt, "etcd CA certificate"))
        key = serialization.load_pem_private_key(read_file(key_path, "etcd CA key"), None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ConfigError(f"{key_path} is not an ECDSA key")
        return cert, key
    key = new_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Capstan etcd CA")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_utc(now - CLOCK_SKEW))
        .not_valid_after(_utc(now + 10 * DEFAULT_TTL))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_usage(True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_private_key(key_path, key_pem(key), overwrite=force)
    atomic_write(crt, cert_pem(cert))
    return cert, key


def _leaf(
    directory: Path,
    stem: str,
    ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey],
    *,
    server: bool,
    ips: Sequence[str],
    dns: Sequence[str],
    now: float,
    ttl: float,
    force: bool,
) -> EtcdFiles:
    ca_cert, ca_key = ca
    key = new_key()
    eku = [ExtendedKeyUsageOID.CLIENT_AUTH]
    if server:
        eku.insert(0, ExtendedKeyUsageOID.SERVER_AUTH)
    try:
        sans: list[x509.GeneralName] = [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
    except ValueError as exc:
        raise ConfigError(f"etcd certificate {stem}: {exc}") from None
    sans += [x509.DNSName(d) for d in dns]
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, stem)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_utc(now - CLOCK_SKEW))
        .not_valid_after(_utc(now + ttl))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_usage(False), critical=True)
        .add_extension(x509.ExtendedKeyUsage(eku), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    files = EtcdFiles(directory / "ca.crt", directory / f"{stem}.crt", directory / f"{stem}.key")
    write_private_key(files.key, key_pem(key), overwrite=force)
    atomic_write(files.cert, cert_pem(cert))
    return files


def issue_member(
    pki_dir: Path,
    name: str,
    *,
    ips: Sequence[str] = ("127.0.0.1",),
    dns: Sequence[str] = ("localhost",),
    ttl: float = DEFAULT_TTL,
    force: bool = False,
    now: float | None = None,
) -> EtcdFiles:
    """An etcd member's pair: it serves clients and peers and dials its peers."""
    validate_name(name)
    moment = time.time() if now is None else now
    directory = etcd_dir(pki_dir)
    ca = _ca(directory, now=moment, force=False)
    return _leaf(
        directory, name, ca, server=True, ips=ips, dns=dns, now=moment, ttl=ttl, force=force
    )


def issue_client(
    pki_dir: Path,
    name: str,
    *,
    ttl: float = DEFAULT_TTL,
    force: bool = False,
    now: float | None = None,
) -> EtcdFiles:
    """A client pair for etcd (an orchestrator's): client authentication only."""
    validate_name(name)
    moment = time.time() if now is None else now
    directory = etcd_dir(pki_dir)
    ca = _ca(directory, now=moment, force=False)
    return _leaf(
        directory,
        f"client-{name}",
        ca,
        server=False,
        ips=(),
        dns=(),
        now=moment,
        ttl=ttl,
        force=force,
    )
