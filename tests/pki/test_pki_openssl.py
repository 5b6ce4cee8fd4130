"""Interop with the real openssl CLI: chains verify, profiles read back, the CRL is honoured."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from pki.authority import Authority

OPENSSL = shutil.which("openssl") or "/usr/bin/openssl"

pytestmark = pytest.mark.skipif(not Path(OPENSSL).exists(), reason="openssl CLI not installed")


def openssl(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [OPENSSL, *map(str, args)], capture_output=True, text=True, timeout=60, check=False
    )


@pytest.fixture
def issued_dir(authority: Authority, tmp_path: Path) -> Path:
    out = tmp_path / "out"
    out.mkdir()
    (out / "intermediate.crt").write_bytes(authority.intermediate_pem())
    authority.write_issued(
        authority.issue("node", "node-1", dns=["node-1.local"], ips=["127.0.0.2"]), out
    )
    authority.write_issued(authority.issue("orchestrator", "orch", dns=["localhost"]), out)
    authority.write_issued(authority.issue("user", "alice", role="tenant:acme"), out)
    authority.write_issued(authority.issue("user", "mallory", role="admin"), out)
    return out


def _verify(out: Path, leaf: str, *extra: str | Path) -> subprocess.CompletedProcess[str]:
    return openssl(
        "verify", "-CAfile", out / "ca.crt", "-untrusted", out / "intermediate.crt",
        *extra, out / f"{leaf}.crt",
    )


@pytest.mark.parametrize("name", ["node-1", "orch", "alice"])
def test_openssl_verifies_issued_chains(issued_dir: Path, name: str) -> None:
    result = _verify(issued_dir, name)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"{issued_dir / name}.crt: OK"


def test_openssl_verifies_purpose(issued_dir: Path) -> None:
    assert _verify(issued_dir, "node-1", "-purpose", "sslserver").returncode == 0
    assert _verify(issued_dir, "node-1", "-purpose", "sslclient").returncode == 0
    assert _verify(issued_dir, "alice", "-purpose", "sslclient").returncode == 0
    refused = _verify(issued_dir, "alice", "-purpose", "sslserver")
    assert refused.returncode != 0
    assert "unsuitable certificate purpose" in refused.stdout + refused.stderr


def test_openssl_refuses_without_the_right_root(issued_dir: Path, tmp_path: Path) -> None:
    other = Authority.init(tmp_path / "other", "capstan.test")
    result = openssl(
        "verify", "-CAfile", tmp_path / "other" / "ca.crt", "-untrusted",
        issued_dir / "intermediate.crt", issued_dir / "node-1.crt",
    )
    assert result.returncode != 0
    assert "unable to get local issuer certificate" in result.stdout + result.stderr
    assert other.trust_bundle() != (issued_dir / "ca.crt").read_bytes()


def test_openssl_reads_profiles(issued_dir: Path) -> None:
    node = openssl("x509", "-in", issued_dir / "node-1.crt", "-noout", "-text").stdout
    assert "Public Key Algorithm: id-ecPublicKey" in node and "NIST CURVE: P-256" in node
    assert "TLS Web Server Authentication, TLS Web Client Authentication" in node
    assert "URI:spiffe://capstan.test/node/node-1" in node
    assert "DNS:node-1.local" in node and "IP Address:127.0.0.2" in node
    assert "CA:FALSE" in node
    user = openssl("x509", "-in", issued_dir / "alice.crt", "-noout", "-text").stdout
    assert "TLS Web Client Authentication" in user
    assert "TLS Web Server Authentication" not in user
    assert "URI:spiffe://capstan.test/user/alice" in user
    # The role extension under Capstan's private arc, value DER UTF8String "tenant:acme".
    role = user.split("2.25.99128039273503578914008079064847990761.1:", 1)[1].split("\n")[1]
    assert role.strip() == "..tenant:acme"  # tag 0x0C and length print as dots
    inter = openssl("x509", "-in", issued_dir / "intermediate.crt", "-noout", "-text").stdout
    assert "CA:TRUE, pathlen:0" in inter
    assert "Certificate Sign, CRL Sign" in inter


def test_key_files_are_private(issued_dir: Path, pki_dir: Path) -> None:
    keys = [*sorted(issued_dir.glob("*.key")), pki_dir / "root.key", pki_dir / "intermediate.key"]
    assert len(keys) == 6
    for key in keys:
        assert key.stat().st_mode & 0o777 == 0o600, key
        check = openssl("pkey", "-in", key, "-noout")
        assert check.returncode == 0, check.stderr


def test_openssl_honours_the_crl(authority: Authority, issued_dir: Path, tmp_path: Path) -> None:
    authority.revoke("mallory", reason="key-compromise")
    crl = tmp_path / "crl.pem"
    crl.write_bytes(authority.crl())
    text = openssl("crl", "-in", crl, "-noout", "-text")
    assert text.returncode == 0, text.stderr
    mallory_serial = next(r.serial for r in authority.list() if r.name == "mallory")
    listed = [
        int(line.split(":", 1)[1], 16)
        for line in text.stdout.splitlines()
        if line.strip().startswith("Serial Number:")
    ]
    assert listed == [mallory_serial]
    assert "Key Compromise" in text.stdout
    assert "Issuer: O = capstan.test, CN = Capstan intermediate CA capstan.test" in text.stdout
    signed = openssl("crl", "-in", crl, "-noout", "-CAfile", issued_dir / "intermediate.crt")
    assert "verify OK" in signed.stdout + signed.stderr

    revoked = _verify(issued_dir, "mallory", "-crl_check", "-CRLfile", crl)
    assert revoked.returncode != 0
    assert "certificate revoked" in revoked.stdout + revoked.stderr
    for name in ("alice", "node-1", "orch"):
        ok = _verify(issued_dir, name, "-crl_check", "-CRLfile", crl)
        assert ok.returncode == 0, ok.stdout + ok.stderr
