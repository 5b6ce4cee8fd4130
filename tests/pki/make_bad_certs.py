#!/usr/bin/env python3
"""Write deliberately bad certificates for a Capstan PKI: the verifier's refusal corpus.

Usage: python tests/pki/make_bad_certs.py OUTDIR [--pki DIR] [--now UNIX-SECONDS]

Without --pki a fresh PKI (trust domain capstan.test) is created in OUTDIR/pki.
Every case is OUTDIR/<case>.pem: the leaf first, then the intermediates a peer
would present. OUTDIR/manifest.json lists the cases, the PKI directory, the trust
domain and the time the validity windows are relative to. Most bad leaves are
signed by the PKI's real intermediate, so only the defect itself is wrong; the
two ``good-*`` cases are controls that must verify.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from pki.authority import Authority
from pki.certs import ROLE_OID, encode_role

SERVER_AND_CLIENT = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
CLIENT_ONLY = [ExtendedKeyUsageOID.CLIENT_AUTH]
HOUR = 3600.0
DAY = 86400.0


def _utc(ts: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(int(ts), tz=datetime.UTC)


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


@dataclass
class Issuer:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey


def _leaf(
    issuer: Issuer,
    *,
    now: float,
    uris: list[str],
    dns: tuple[str, ...] = ("localhost",),
    eku: list[x509.ObjectIdentifier] | None = None,
    public_key: ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey | None = None,
    not_before: float | None = None,
    not_after: float | None = None,
    role: bytes | None = None,
    ca: bool = False,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A leaf shaped like Capstan's, with exactly the defects the arguments ask for."""
    key = ec.generate_private_key(ec.SECP256R1())
    public = public_key if public_key is not None else key.public_key()
    sans: list[x509.GeneralName] = [x509.UniformResourceIdentifier(u) for u in uris]
    sans += [x509.DNSName(d) for d in dns]
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bad")]))
        .issuer_name(issuer.cert.subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(_utc(now - 300 if not_before is None else not_before))
        .not_valid_after(_utc(now + DAY if not_after is None else not_after))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=ca, crl_sign=False,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()),
            critical=False,
        )
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    if eku is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage(eku), critical=False)
    if isinstance(public, ec.EllipticCurvePublicKey):
        builder = builder.add_extension(
            x509.SubjectKeyIdentifier.from_public_key(public), critical=False
        )
    if role is not None:
        builder = builder.add_extension(x509.UnrecognizedExtension(ROLE_OID, role), critical=False)
    return builder.sign(issuer.key, hashes.SHA256()), key


def _foreign_ca(trust_domain: str, like: x509.Certificate, now: float) -> Issuer:
    """Another root+intermediate with the very same names as the real intermediate."""
    root_key = ec.generate_private_key(ec.SECP256R1())
    root_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"Impostor {trust_domain}")])
    inter_key = ec.generate_private_key(ec.SECP256R1())
    inter = (
        x509.CertificateBuilder()
        .subject_name(like.subject)
        .issuer_name(root_name)
        .public_key(inter_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_utc(now - DAY))
        .not_valid_after(_utc(now + 30 * DAY))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(inter_key.public_key()), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(root_key.public_key()), False
        )
        .sign(root_key, hashes.SHA256())
    )
    return Issuer(inter, inter_key)


def make_bad_certs(outdir: Path, pki_dir: Path | None, now: float) -> dict[str, object]:
    outdir.mkdir(parents=True, exist_ok=True)
    if pki_dir is None:
        pki_dir = outdir / "pki"
        Authority.init(pki_dir, "capstan.test", now=now)
    authority = Authority.open(pki_dir)
    td = authority.trust_domain
    key = serialization.load_pem_private_key(
        (pki_dir / "intermediate.key").read_bytes(), password=None
    )
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    real = Issuer(authority.intermediate, key)
    node_uri, user_uri = f"spiffe://{td}/node/node-1", f"spiffe://{td}/user/alice"
    viewer = encode_role("viewer")

    cases: dict[str, tuple[str, list[x509.Certificate]]] = {}

    def add(name: str, purpose: str, leaf: x509.Certificate, *chain: x509.Certificate) -> None:
        cases[name] = (purpose, [leaf, *(chain or (real.cert,))])

    add("good-node", "server", _leaf(real, now=now, uris=[node_uri], eku=SERVER_AND_CLIENT)[0])
    add("good-user", "client", _leaf(
        real, now=now, uris=[user_uri], dns=(), eku=CLIENT_ONLY, role=viewer)[0])
    add("node-client-only-eku", "client",
        _leaf(real, now=now, uris=[node_uri], eku=CLIENT_ONLY)[0])
    add("user-server-eku", "client", _leaf(
        real, now=now, uris=[user_uri], dns=(), eku=SERVER_AND_CLIENT, role=viewer)[0])
    add("no-eku", "client", _leaf(real, now=now, uris=[node_uri], eku=None)[0])
    add("expired", "server", _leaf(
        real, now=now, uris=[node_uri], eku=SERVER_AND_CLIENT,
        not_before=now - 2 * DAY, not_after=now - DAY)[0])
    add("not-yet-valid", "server", _leaf(
        real, now=now, uris=[node_uri], eku=SERVER_AND_CLIENT,
        not_before=now + DAY, not_after=now + 2 * DAY)[0])
    impostor = _foreign_ca(td, real.cert, now)
    add("other-ca", "server",
        _leaf(impostor, now=now, uris=[node_uri], eku=SERVER_AND_CLIENT)[0], impostor.cert)
    parent, parent_key = _leaf(real, now=now, uris=[f"spiffe://{td}/node/node-2"],
                               eku=SERVER_AND_CLIENT)
    add("signed-by-leaf", "server",
        _leaf(Issuer(parent, parent_key), now=now, uris=[node_uri], eku=SERVER_AND_CLIENT)[0],
        parent, real.cert)
    add("leaf-is-ca", "server",
        _leaf(real, now=now, uris=[node_uri], eku=SERVER_AND_CLIENT, ca=True)[0])
    add("no-spiffe-san", "server", _leaf(real, now=now, uris=[], eku=SERVER_AND_CLIENT)[0])
    add("two-spiffe-sans", "server", _leaf(
        real, now=now, uris=[node_uri, f"spiffe://{td}/node/node-2"], eku=SERVER_AND_CLIENT)[0])
    add("upper-case-scheme", "server", _leaf(
        real, now=now, uris=[f"SPIFFE://{td}/node/node-1"], eku=SERVER_AND_CLIENT)[0])
    add("other-trust-domain", "server", _leaf(
        real, now=now, uris=["spiffe://evil.test/node/node-1"], eku=SERVER_AND_CLIENT)[0])
    add("bad-kind", "server", _leaf(
        real, now=now, uris=[f"spiffe://{td}/admin/node-1"], eku=SERVER_AND_CLIENT)[0])
    add("bad-name", "server", _leaf(
        real, now=now, uris=[f"spiffe://{td}/node/Node_1"], eku=SERVER_AND_CLIENT)[0])
    add("extra-path", "server", _leaf(
        real, now=now, uris=[f"spiffe://{td}/node/node-1/extra"], eku=SERVER_AND_CLIENT)[0])
    add("ed25519-key", "server", _leaf(
        real, now=now, uris=[node_uri], eku=SERVER_AND_CLIENT,
        public_key=ed25519.Ed25519PrivateKey.generate().public_key())[0])
    add("p384-key", "server", _leaf(
        real, now=now, uris=[node_uri], eku=SERVER_AND_CLIENT,
        public_key=ec.generate_private_key(ec.SECP384R1()).public_key())[0])
    add("user-no-role", "client",
        _leaf(real, now=now, uris=[user_uri], dns=(), eku=CLIENT_ONLY)[0])
    add("user-bad-role", "client", _leaf(
        real, now=now, uris=[user_uri], dns=(), eku=CLIENT_ONLY,
        role=b"\x0c\x04root")[0])
    add("user-malformed-role", "client", _leaf(
        real, now=now, uris=[user_uri], dns=(), eku=CLIENT_ONLY,
        role=b"\x13\x05admin")[0])
    add("node-with-role", "server", _leaf(
        real, now=now, uris=[node_uri], eku=SERVER_AND_CLIENT, role=encode_role("admin"))[0])
    add("user-as-server", "server", _leaf(
        real, now=now, uris=[user_uri], dns=("localhost",), eku=CLIENT_ONLY, role=viewer)[0])

    manifest: dict[str, object] = {
        "pki": str(pki_dir.resolve()),
        "trust_domain": td,
        "now": now,
        "cases": {},
    }
    for name, (purpose, chain) in cases.items():
        path = outdir / f"{name}.pem"
        path.write_bytes(b"".join(_pem(c) for c in chain))
        manifest["cases"][name] = {"file": path.name, "purpose": purpose}  # type: ignore[index]
    (outdir / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("outdir", type=Path)
    parser.add_argument("--pki", type=Path, help="an existing Capstan PKI directory")
    parser.add_argument("--now", type=float, help="unix seconds validity windows are based on")
    args = parser.parse_args(argv)
    manifest = make_bad_certs(args.outdir, args.pki, time.time() if args.now is None else args.now)
    print(f"wrote {len(manifest['cases'])} certificates to {args.outdir}")  # type: ignore[arg-type]
    return 0


if __name__ == "__main__":
    sys.exit(main())
