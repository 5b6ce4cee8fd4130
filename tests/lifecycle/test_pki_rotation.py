"""CA rotation at the PKI directory level (real files, real openssl) and the node's
ordered key/certificate swap."""

from __future__ import annotations

import random
import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography import x509

from node.renewal import (
    RenewalError,
    credentials_for_token,
    discard_previous,
    install,
    pair_for_token,
    read_pair,
    recover,
    renewal_point,
)
from orchestrator.cli import _register, cli
from pki.authority import Authority
from pki.certs import ChainVerifier, load_pem_chain, thumbprint
from pki.errors import ConfigError, PKIError
from pki.rotation import (
    RotationInProgress,
    finish_rotation,
    in_use_under,
    rotate_ca,
    rotation_status,
    write_crls,
)
from pki.tokenkeys import TokenKeyStore
from pki.tokens import mint

TD = "rot.test"


@pytest.fixture
def pki(tmp_path: Path) -> Path:
    Authority.init(tmp_path / "pki", TD)
    return tmp_path / "pki"


def verify(bundle: list[x509.Certificate], chain_pem: bytes) -> str:
    chain = load_pem_chain(chain_pem)
    import time

    return ChainVerifier(bundle, TD).verify(
        chain[0], chain[1:], purpose="server", now=time.time()
    ).uri


def openssl_verify(tmp: Path, roots: bytes, chain: bytes) -> subprocess.CompletedProcess[str]:
    (tmp / "roots.pem").write_bytes(roots)
    certs = load_pem_chain(chain)
    end = b"-----END CERTIFICATE-----\n"
    (tmp / "leaf.pem").write_bytes(chain.split(end)[0] + end)
    (tmp / "untrusted.pem").write_bytes(chain[len((tmp / "leaf.pem").read_bytes()) :])
    assert len(certs) >= 2
    return subprocess.run(
        ["openssl", "verify", "-CAfile", str(tmp / "roots.pem"), "-untrusted",
         str(tmp / "untrusted.pem"), str(tmp / "leaf.pem")],
        capture_output=True, text=True, check=False,
    )


def test_old_and_new_leaves_verify_during_the_overlap_and_cross_chain_for_old_peers(
    pki: Path, tmp_path: Path
) -> None:
    old = Authority.open(pki).issue("node", "n1", ips=["127.0.0.1"])
    rotation = rotate_ca(pki)
    new_ca = Authority.open(pki)
    new = new_ca.issue("node", "n1", ips=["127.0.0.1"])
    bundle = new_ca.trust_roots()
    assert [thumbprint(r) for r in bundle] == [rotation.old_root, rotation.new_root]
    assert verify(bundle, old.chain_pem) == verify(bundle, new.chain_pem) == f"spiffe://{TD}/node/n1"
    # A peer that holds only the old root verifies the new leaf through the cross chain.
    old_root = (pki / "previous" / "root.crt").read_bytes()
    cross_chain = new.cert_pem + (pki / "intermediate-cross.crt").read_bytes()
    assert verify(load_pem_chain(old_root), cross_chain)
    if shutil.which("openssl"):
        assert openssl_verify(tmp_path, old_root, cross_chain).returncode == 0
        assert openssl_verify(tmp_path, new_ca.trust_bundle(), new.chain_pem).returncode == 0
        refused = openssl_verify(tmp_path, old_root, new.chain_pem)
        assert refused.returncode != 0
    # Both CAs publish a CRL while both are trusted.
    assert [p.name for p in write_crls(pki)] == ["crl.pem", "crl-previous.pem"]


def test_a_second_rotation_is_refused_while_one_is_under_way(pki: Path) -> None:
    first = rotate_ca(pki)
    bundle = (pki / "ca.crt").read_bytes()
    with pytest.raises(RotationInProgress):
        rotate_ca(pki)
    assert (pki / "ca.crt").read_bytes() == bundle
    assert rotation_status(pki) == first


def test_finish_is_refused_while_a_leaf_in_use_needs_the_old_ca(pki: Path) -> None:
    Authority.open(pki).issue("user", "alice", role="admin")
    Authority.open(pki).issue("node", "n1")
    rotation = rotate_ca(pki)
    bundle = (pki / "ca.crt").read_bytes()
    with pytest.raises(PKIError, match="user/alice"):
        finish_rotation(pki)
    assert (pki / "ca.crt").read_bytes() == bundle
    # Re-issued under the new CA, the older certificates no longer count as in use.
    Authority.open(pki).issue("user", "alice", role="admin")
    assert [f"{r.kind.value}/{r.name}" for r in in_use_under(pki, rotation.old_intermediate)] == [
        "node/n1"
    ]
    Authority.open(pki).issue("node", "n1")
    finish_rotation(pki)
    assert [thumbprint(r) for r in Authority.open(pki).trust_roots()] == [rotation.new_root]
    assert rotation_status(pki) is None
    assert not (pki / "previous").exists() and not (pki / "intermediate-cross.crt").exists()


def test_cli_rotate_ca_rotation_and_forced_finish(pki: Path) -> None:
    _register()
    runner = CliRunner()
    Authority.open(pki).issue("node", "n1")
    out = runner.invoke(cli, ["pki", "rotate-ca", "--dir", str(pki)])
    assert out.exit_code == 0, out.output
    assert "1 certificate(s) in use chain to the old CA" in out.output
    out = runner.invoke(cli, ["pki", "rotation", "--dir", str(pki)])
    assert "node/n1" in out.output
    out = runner.invoke(cli, ["pki", "rotate-ca", "--dir", str(pki), "--finish"])
    assert out.exit_code != 0 and rotation_status(pki) is not None
    out = runner.invoke(cli, ["pki", "rotate-ca", "--dir", str(pki), "--finish", "--force"])
    assert out.exit_code == 0, out.output
    assert rotation_status(pki) is None


# -- the node's key and certificate swap ------------------------------------------------


def pair(authority: Authority, directory: Path) -> tuple[Path, Path, bytes, bytes]:
    issued = authority.issue("node", "n1", ips=["127.0.0.1"])
    assert issued.key_pem is not None
    return directory / "node.crt", directory / "node.key", issued.chain_pem, issued.key_pem


def test_install_then_read_pair_and_previous_pair_for_tokens_minted_before(
    pki: Path, tmp_path: Path
) -> None:
    ca = Authority.open(pki)
    crt, key, chain1, key1 = pair(ca, tmp_path)
    crt.write_bytes(chain1)
    key.write_bytes(key1)
    key.chmod(0o600)
    _, _, chain2, key2 = pair(ca, tmp_path)
    install(crt, key, chain2, key2)
    assert read_pair(crt, key) == (chain2, key2)
    assert (tmp_path / "node.key.prev").stat().st_mode & 0o077 == 0
    (tmp_path / "ca.crt").write_bytes(ca.trust_bundle())
    signer = TokenKeyStore.open(pki / "token-keys").signer()

    def token(chain: bytes) -> str:
        return mint(
            signer,
            iss="spiffe://rot.test/orchestrator/o",
            sub="spiffe://rot.test/node/n1",
            aud="spiffe://rot.test/node/n2",
            op="node.info",
            res="*",
            cnf=thumbprint(load_pem_chain(chain)[0]),
            ttl=10,
            epoch=1,
        )

    assert pair_for_token(crt, key, token(chain1)) == (chain1, key1)
    assert pair_for_token(crt, key, token(chain2)) == (chain2, key2)
    assert credentials_for_token(crt, key, tmp_path / "ca.crt", token(chain1)) is not None
    discard_previous(crt, key)
    assert pair_for_token(crt, key, token(chain1)) == (chain2, key2)


def test_mismatched_pair_is_never_used(pki: Path, tmp_path: Path) -> None:
    ca = Authority.open(pki)
    crt, key, chain1, _ = pair(ca, tmp_path)
    _, _, _, key2 = pair(ca, tmp_path)
    crt.write_bytes(chain1)
    key.write_bytes(key2)
    with pytest.raises(ConfigError, match="does not match"):
        read_pair(crt, key, attempts=2, pause=0)
    with pytest.raises(RenewalError, match="not for the new key"):
        install(crt, key, chain1, key2)
    assert crt.read_bytes() == chain1 and key.read_bytes() == key2  # nothing written


@pytest.mark.parametrize("crash_after", ["written", "key renamed"])
def test_recover_finishes_an_interrupted_swap(pki: Path, tmp_path: Path, crash_after: str) -> None:
    ca = Authority.open(pki)
    crt, key, chain1, key1 = pair(ca, tmp_path)
    crt.write_bytes(chain1)
    key.write_bytes(key1)
    _, _, chain2, key2 = pair(ca, tmp_path)
    (tmp_path / "node.crt.new").write_bytes(chain2)
    if crash_after == "written":
        (tmp_path / "node.key.new").write_bytes(key2)
    else:
        key.write_bytes(key2)
    assert recover(crt, key)
    assert read_pair(crt, key) == (chain2, key2)
    assert not (tmp_path / "node.crt.new").exists() and not (tmp_path / "node.key.new").exists()


def test_renewal_point_is_jittered_around_two_thirds(pki: Path) -> None:
    leaf = Authority.open(pki).issue("node", "n1", ttl=60).cert
    issued = leaf.not_valid_before_utc.timestamp() + 300
    points = {renewal_point(leaf, random.Random(seed)) for seed in range(50)}
    assert all(issued + 60 * 0.6 < p < issued + 60 * 0.72 for p in points)
    assert len(points) > 40  # spread, not one instant for every node
