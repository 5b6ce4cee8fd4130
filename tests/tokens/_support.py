"""Shared material for the token tests: identities, real certificates, token forging."""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
from dataclasses import dataclass
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from pki._jose import b64url_encode
from pki.errors import TokenError
from pki.tokenkeys import TokenSigner
from pki.tokens import TokenVerifier

NOW = 1_800_000_000.0
TD = "capstan.test"
ISS = f"spiffe://{TD}/orchestrator/main"
SUB = f"spiffe://{TD}/node/node-1"
AUD = f"spiffe://{TD}/node/node-2"
OP = "container.start"
RES = "c-0123456789abcdef"
# Last characters of a canonical 43-char base64url whose upper-case form is still
# canonical: lets the upper-case cnf variant be well-formed yet different.
_UPPER_SAFE_LAST = set("AEIMQUY048")


@dataclass(frozen=True)
class Leaf:
    der: bytes
    pem: bytes
    thumbprint: str


@dataclass(frozen=True)
class CertPair:
    """Two real P-256 certificates for the same SPIFFE id from the same CA."""

    ca_pem: bytes
    caller: Leaf
    other: Leaf


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _leaf(ca_key: ec.EllipticCurvePrivateKey, ca_name: x509.Name, spiffe: str) -> Leaf:
    key = ec.generate_private_key(ec.SECP256R1())
    start = datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("node-1"))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=20000))
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(spiffe)]), critical=True
        )
        .sign(ca_key, hashes.SHA256())
    )
    der = cert.public_bytes(serialization.Encoding.DER)
    return Leaf(
        der=der,
        pem=cert.public_bytes(serialization.Encoding.PEM),
        thumbprint=b64url_encode(hashlib.sha256(der).digest()),
    )


def _interesting(thumbprint: str) -> bool:
    # '-' or '_' makes the standard-base64 variant differ; a safe last character
    # keeps the upper-case variant well-formed.
    return (
        ("-" in thumbprint or "_" in thumbprint)
        and thumbprint[-1] in _UPPER_SAFE_LAST
        and thumbprint != thumbprint.upper()
    )


def make_cert_pair() -> CertPair:
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("capstan test CA")
    start = datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC)
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=20000))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    for _ in range(400):
        caller = _leaf(ca_key, ca_name, SUB)
        if _interesting(caller.thumbprint):
            break
    else:  # pragma: no cover - probability about 1e-40
        raise AssertionError("no suitable certificate generated")
    other = _leaf(ca_key, ca_name, SUB)
    return CertPair(ca.public_bytes(serialization.Encoding.PEM), caller, other)


def b64(data: bytes | str) -> str:
    return b64url_encode(data.encode() if isinstance(data, str) else data)


def compact(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def forge(
    signer: TokenSigner, header: dict[str, Any] | bytes, claims: dict[str, Any] | bytes
) -> str:
    """A token with any header and claims, validly signed by ``signer``."""
    h = header if isinstance(header, bytes) else compact(header)
    p = claims if isinstance(claims, bytes) else compact(claims)
    signing_input = f"{b64(h)}.{b64(p)}"
    return f"{signing_input}.{b64(signer.sign(signing_input.encode()))}"


def header_for(signer: TokenSigner, **changes: Any) -> dict[str, Any]:
    header: dict[str, Any] = {"alg": "EdDSA", "typ": "cap+jwt", "kid": signer.kid}
    header.update(changes)
    return header


def claims_for(thumbprint: str, /, *, now: float = NOW, **changes: Any) -> dict[str, Any]:
    iat = int(now)
    claims: dict[str, Any] = {
        "iss": ISS,
        "sub": SUB,
        "aud": AUD,
        "op": OP,
        "res": RES,
        "cnf": {"x5t#S256": thumbprint},
        "iat": iat,
        "nbf": iat,
        "exp": iat + 60,
        "jti": b64url_encode(hashlib.sha256(repr(changes).encode()).digest()[:16]),
        "epoch": 0,
    }
    claims.update(changes)
    return claims


def jti_of(token: str) -> str | None:
    """The jti a token carries, if its payload can be read at all."""
    try:
        payload = token.split(".")[1]
        padded = payload + "=" * (-len(payload) % 4)
        value = json.loads(base64.urlsafe_b64decode(padded)).get("jti")
    except Exception:
        return None
    return value if isinstance(value, str) else None


def assert_refused(
    verifier: TokenVerifier,
    token: Any,
    expected: type[TokenError],
    **call: Any,
) -> TokenError:
    """Verify must raise exactly ``expected`` and leave the replay cache untouched."""
    before = len(verifier.replay)
    with pytest.raises(TokenError) as info:
        verifier.verify(token, **call)
    assert type(info.value) is expected, f"{type(info.value).__name__}: {info.value}"
    assert len(verifier.replay) == before, "a refused token was recorded in the replay cache"
    if isinstance(token, str):
        jti = jti_of(token)
        if jti is not None:
            assert jti not in verifier.replay
    return info.value
