"""ChainVerifier: accepts what the CA issues, refuses every certificate of the bad corpus."""

from __future__ import annotations

import base64
import hashlib
import subprocess
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from pki.authority import Authority
from pki.certs import (
    ChainVerifier,
    decode_role,
    encode_role,
    identity_of,
    load_pem_chain,
    role_of,
    thumbprint,
)
from pki.errors import CertificateError
from pki.identity import Identity, Kind

# Each case of make_bad_certs.py and the exact refusal the verifier must give.
REFUSALS = {
    "node-client-only-eku": "node certificate must have both serverAuth and clientAuth EKU",
    "user-server-eku": "user certificate must not have serverAuth EKU",
    "no-eku": "certificate has no extended key usage",
    "expired": "certificate expired at ",
    "not-yet-valid": "certificate is not valid before ",
    "other-ca": "certificate chain does not verify: ",
    "signed-by-leaf": "certificate chain does not verify: .*basicConstraints.cA must be asserted",
    "leaf-is-ca": "certificate chain does not verify: .*cA must not be asserted in an EE",
    "no-spiffe-san": "certificate has no spiffe URI SAN",
    "two-spiffe-sans": "certificate has 2 spiffe URI SANs; only one is allowed",
    "upper-case-scheme": "not a spiffe identity: 'SPIFFE://",
    "other-trust-domain": "belongs to trust domain 'evil.test', not 'capstan.test'",
    "bad-kind": "unknown kind 'admin'",
    "bad-name": "invalid node name 'Node_1'",
    "extra-path": "expected spiffe://TRUST-DOMAIN/KIND/NAME",
    "ed25519-key": "certificate key is Ed25519, not ECDSA P-256",
    "p384-key": "certificate key is ECDSA P-384, not ECDSA P-256",
    "user-no-role": "user certificate carries no role",
    "user-bad-role": "certificate carries an invalid role 'root'",
    "user-malformed-role": "certificate role extension is malformed",
    "node-with-role": "node certificate must not carry a role",
    "user-as-server": "a user certificate cannot act as a server",
}


def _case(bad_certs: dict[str, Any], name: str) -> list[x509.Certificate]:
    entry = bad_certs["cases"][name]
    return load_pem_chain((Path(bad_certs["dir"]) / entry["file"]).read_bytes())


def _verifier(bad_certs: dict[str, Any]) -> ChainVerifier:
    return Authority.open(Path(bad_certs["pki"])).verifier()


def test_corpus_is_complete(bad_certs: dict[str, Any]) -> None:
    assert set(bad_certs["cases"]) == set(REFUSALS) | {"good-node", "good-user"}


@pytest.mark.parametrize("name", ["good-node", "good-user"])
def test_corpus_controls_verify(bad_certs: dict[str, Any], name: str) -> None:
    chain = _case(bad_certs, name)
    purpose = bad_certs["cases"][name]["purpose"]
    ident = _verifier(bad_certs).verify(chain[0], chain[1:], purpose=purpose, now=bad_certs["now"])
    assert ident.trust_domain == "capstan.test"


@pytest.mark.parametrize("name", sorted(REFUSALS))
def test_corpus_is_refused(bad_certs: dict[str, Any], name: str) -> None:
    chain = _case(bad_certs, name)
    purpose = bad_certs["cases"][name]["purpose"]
    with pytest.raises(CertificateError, match=REFUSALS[name]):
        _verifier(bad_certs).verify(chain[0], chain[1:], purpose=purpose, now=bad_certs["now"])


@pytest.mark.parametrize("name", ["node-client-only-eku", "no-eku", "ed25519-key", "other-ca"])
def test_corpus_refused_for_either_purpose(bad_certs: dict[str, Any], name: str) -> None:
    chain = _case(bad_certs, name)
    for purpose in ("client", "server"):
        with pytest.raises(CertificateError):
            _verifier(bad_certs).verify(chain[0], chain[1:], purpose=purpose, now=bad_certs["now"])


def test_issued_certificates_verify(authority: Authority, now: float) -> None:
    verifier = authority.verifier()
    inter = [authority.intermediate]
    orch = authority.issue("orchestrator", "orch-1", dns=["localhost"], now=now)
    node = authority.issue("node", "node-1", ips=["127.0.0.2"], now=now)
    user = authority.issue("user", "alice", role="tenant:acme", now=now)
    for issued in (orch, node):
        assert verifier.verify(issued.cert, inter, purpose="server", now=now) == issued.identity
        assert verifier.verify(issued.cert, inter, purpose="client", now=now) == issued.identity
    assert verifier.verify(node.cert, inter, purpose="server", now=now, server_name="127.0.0.2")
    assert verifier.verify(user.cert, inter, purpose="client", now=now) == Identity(
        "capstan.test", Kind.USER, "alice"
    )
    assert role_of(user.cert) == "tenant:acme"
    assert role_of(node.cert) is None


def test_validity_window_follows_the_clock(authority: Authority, now: float) -> None:
    node = authority.issue("node", "node-1", dns=["localhost"], now=now)
    verifier, inter = authority.verifier(), [authority.intermediate]
    start = node.cert.not_valid_before_utc.timestamp()
    verifier.verify(node.cert, inter, purpose="server", now=start)
    verifier.verify(node.cert, inter, purpose="server", now=node.not_after)
    with pytest.raises(CertificateError, match=r"expired at"):
        verifier.verify(node.cert, inter, purpose="server", now=node.not_after + 1)
    with pytest.raises(CertificateError, match=r"not valid before"):
        verifier.verify(node.cert, inter, purpose="server", now=start - 1)


def test_server_name_must_be_in_the_certificate(authority: Authority, now: float) -> None:
    node = authority.issue("node", "node-1", dns=["node-1.example"], now=now)
    with pytest.raises(CertificateError, match=r"no matching subjectAltName"):
        authority.verifier().verify(
            node.cert, [authority.intermediate], purpose="server", now=now, server_name="other"
        )
    # Without addresses a server still carries its identity name (what clients check).
    bare = authority.issue("node", "node-2", now=now)
    authority.verifier().verify(
        bare.cert,
        [authority.intermediate],
        purpose="server",
        now=now,
        server_name="node-2.node.capstan.test.spiffe.invalid",
    )
    # As a client, the same certificate needs no address.
    authority.verifier().verify(bare.cert, [authority.intermediate], purpose="client", now=now)


def test_missing_intermediate_is_refused(authority: Authority, now: float) -> None:
    node = authority.issue("node", "node-1", dns=["localhost"], now=now)
    with pytest.raises(CertificateError, match=r"certificate chain does not verify"):
        authority.verifier().verify(node.cert, [], purpose="server", now=now)


def test_revoked_serials_are_refused(authority: Authority, now: float) -> None:
    node = authority.issue("node", "node-1", dns=["localhost"], now=now)
    other = authority.issue("node", "node-2", dns=["localhost"], now=now)
    verifier = authority.verifier()
    inter = [authority.intermediate]
    verifier.verify(node.cert, inter, purpose="client", now=now)
    verifier.set_revoked({node.serial})
    with pytest.raises(CertificateError, match=f"certificate serial {node.serial:x} is revoked"):
        verifier.verify(node.cert, inter, purpose="client", now=now)
    verifier.verify(other.cert, inter, purpose="client", now=now)
    # A revoked intermediate takes every leaf below it down.
    verifier.set_revoked({authority.intermediate.serial_number})
    with pytest.raises(CertificateError, match=r"CA certificate serial .* is revoked"):
        verifier.verify(other.cert, inter, purpose="client", now=now)
    # And revocation recorded by the CA reaches a fresh verifier.
    authority.revoke(node.serial, now=now)
    with pytest.raises(CertificateError, match=r"is revoked"):
        authority.verifier().verify(node.cert, inter, purpose="client", now=now)


def test_several_roots_side_by_side(tmp_path: Path, now: float) -> None:
    old = Authority.init(tmp_path / "old", "capstan.test", now=now)
    new = Authority.init(tmp_path / "new", "capstan.test", now=now)
    a = old.issue("node", "a", dns=["localhost"], now=now)
    b = new.issue("node", "b", dns=["localhost"], now=now)
    both = ChainVerifier(old.trust_roots() + new.trust_roots(), "capstan.test")
    both.verify(a.cert, [old.intermediate], purpose="server", now=now)
    both.verify(b.cert, [new.intermediate], purpose="server", now=now)
    only_new = new.verifier()
    with pytest.raises(CertificateError, match=r"certificate chain does not verify"):
        only_new.verify(a.cert, [old.intermediate], purpose="server", now=now)
    # Presenting the other PKI's intermediate does not help either.
    with pytest.raises(CertificateError, match=r"certificate chain does not verify"):
        only_new.verify(a.cert, [old.intermediate, new.intermediate], purpose="server", now=now)


def test_verifier_for_another_trust_domain(authority: Authority, now: float) -> None:
    node = authority.issue("node", "node-1", dns=["localhost"], now=now)
    other = ChainVerifier(authority.trust_roots(), "other.test")
    with pytest.raises(CertificateError, match=r"not 'other.test'"):
        other.verify(node.cert, [authority.intermediate], purpose="server", now=now)


def test_verifier_arguments(authority: Authority, now: float) -> None:
    with pytest.raises(CertificateError, match=r"no trust roots"):
        ChainVerifier([], "capstan.test")
    with pytest.raises(CertificateError, match=r"invalid trust domain"):
        ChainVerifier(authority.trust_roots(), "Bad_Domain")
    node = authority.issue("node", "node-1", dns=["localhost"], now=now)
    with pytest.raises(CertificateError, match=r"unknown verification purpose"):
        authority.verifier().verify(node.cert, purpose="peer", now=now)  # type: ignore[arg-type]


def test_thumbprint_is_x5t_s256(authority: Authority, now: float, tmp_path: Path) -> None:
    node = authority.issue("node", "node-1", now=now)
    der = node.cert.public_bytes(serialization.Encoding.DER)
    expected = base64.urlsafe_b64encode(hashlib.sha256(der).digest()).rstrip(b"=").decode()
    assert thumbprint(node.cert) == expected == node.thumbprint
    assert "=" not in expected and len(expected) == 43
    # Same digest as openssl's own fingerprint.
    pem = tmp_path / "leaf.pem"
    pem.write_bytes(node.cert_pem)
    out = subprocess.run(
        ["openssl", "x509", "-in", str(pem), "-noout", "-fingerprint", "-sha256"],
        check=True, capture_output=True, text=True, timeout=30,
    ).stdout
    hex_digest = out.strip().split("=", 1)[1].replace(":", "")
    assert bytes.fromhex(hex_digest) == hashlib.sha256(der).digest()


def test_identity_of_and_role_of(bad_certs: dict[str, Any]) -> None:
    assert identity_of(_case(bad_certs, "good-node")[0]).uri == "spiffe://capstan.test/node/node-1"
    assert role_of(_case(bad_certs, "good-user")[0]) == "viewer"
    with pytest.raises(CertificateError, match=r"no spiffe URI SAN"):
        identity_of(_case(bad_certs, "no-spiffe-san")[0])
    with pytest.raises(CertificateError, match=r"2 spiffe URI SANs"):
        identity_of(_case(bad_certs, "two-spiffe-sans")[0])
    with pytest.raises(CertificateError, match=r"malformed"):
        role_of(_case(bad_certs, "user-malformed-role")[0])


def test_role_encoding() -> None:
    for role in ("admin", "viewer", "tenant:acme", "tenant:" + "a" * 63):
        assert decode_role(encode_role(role)) == role
    assert encode_role("admin") == b"\x0c\x05admin"
    for raw in (b"", b"\x0c", b"\x0c\x06admin", b"\x0c\x04admin", b"\x13\x05admin",
                b"\x0c\x05adm\xffn", b"\x0c\x81\x05admin"):
        with pytest.raises(CertificateError, match=r"malformed"):
            decode_role(raw)
    with pytest.raises(CertificateError, match=r"invalid role"):
        decode_role(b"\x0c\x04root")


def test_load_pem_chain() -> None:
    with pytest.raises(CertificateError, match=r"^certificate file holds no readable PEM"):
        load_pem_chain(b"hello")
    with pytest.raises(CertificateError, match=r"^ca.crt holds no readable PEM certificate$"):
        load_pem_chain(b"", "ca.crt")
    with pytest.raises(CertificateError, match=r"holds no readable PEM certificate"):
        load_pem_chain(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
