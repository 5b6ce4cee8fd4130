"""``capstan pki``: through the real entry point, and a few times as a real subprocess."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from orchestrator.cli import main
from pki.authority import Authority
from pki.certs import identity_of, role_of
from pki.tokenkeys import TokenKeyStore

Snapshot = Callable[[Path], dict[str, bytes]]


class Run:
    def __init__(self, capsys: pytest.CaptureFixture[str]) -> None:
        self.capsys = capsys

    def __call__(self, *args: str | Path) -> tuple[int, str, str]:
        self.capsys.readouterr()
        code = main([str(a) for a in args])
        out, err = self.capsys.readouterr()
        return code, out, err

    def ok(self, *args: str | Path) -> str:
        code, out, err = self(*args)
        assert code == 0, err
        assert err == ""
        return out

    def fails(self, *args: str | Path, code: int = 1) -> str:
        """The one error line of a refused command (exit ``code``, nothing on stdout)."""
        got, out, err = self(*args)
        assert got == code, (out, err)
        assert "Traceback" not in err
        if code == 1:
            assert out == ""
            assert err.count("\n") == 1 and err.startswith("error: "), err
        return err.strip()


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str]) -> Run:
    return Run(capsys)


@pytest.fixture
def pki(run: Run, tmp_path: Path) -> Path:
    directory = tmp_path / "pki"
    out = run.ok("pki", "init", "--dir", directory, "--trust-domain", "capstan.test")
    assert "created PKI for trust domain capstan.test" in out
    return directory


@pytest.fixture
def out(tmp_path: Path) -> Path:
    path = tmp_path / "out"
    path.mkdir()
    return path


def test_issue_list_inspect_revoke_crl(run: Run, pki: Path, out: Path, tmp_path: Path) -> None:
    run.ok("pki", "issue", "--dir", pki, "node", "node-1", "--dns", "localhost",
           "--ip", "127.0.0.1", "--ttl", "12h", "--out", out)
    run.ok("pki", "issue", "--dir", pki, "user", "alice", "--role", "tenant:acme", "--out", out)
    assert {p.name for p in out.iterdir()} == {
        "node-1.crt", "node-1.key", "alice.crt", "alice.key", "ca.crt"
    }
    assert os.stat(out / "alice.key").st_mode & 0o777 == 0o600

    records = json.loads(run.ok("pki", "list", "--dir", pki, "-o", "json"))
    assert [(r["kind"], r["name"], r["role"], r["status"]) for r in records] == [
        ("node", "node-1", None, "valid"), ("user", "alice", "tenant:acme", "valid"),
    ]
    assert records[0]["not_after"] - records[0]["not_before"] == 12 * 3600 + 300
    table = run.ok("pki", "list", "--dir", pki).splitlines()
    assert table[0].split() == ["SERIAL", "KIND", "NAME", "ROLE", "NOT", "AFTER", "STATUS"]
    assert len(table) == 3

    doc = json.loads(run.ok("pki", "inspect", out / "node-1.crt", "-o", "json"))
    assert isinstance(doc, list) and len(doc) == 2  # leaf and intermediate
    leaf = doc[0]
    cert = x509.load_pem_x509_certificates((out / "node-1.crt").read_bytes())[0]
    assert leaf["identity"] == "spiffe://capstan.test/node/node-1"
    assert leaf["eku"] == ["serverAuth", "clientAuth"]
    assert leaf["san"] == {
        "uri": ["spiffe://capstan.test/node/node-1"],
        "dns": ["localhost", "node-1.node.capstan.test.spiffe.invalid"],
        "ip": ["127.0.0.1"],
    }
    assert leaf["serial"] == records[0]["serial"] == f"{cert.serial_number:x}"
    assert leaf["key"] == "ECDSA P-256" and leaf["ca"] is False and leaf["role"] is None
    assert leaf["issuer"] == "CN=Capstan intermediate CA capstan.test,O=capstan.test"
    assert len(leaf["x5t#S256"]) == 43
    assert doc[1]["ca"] is True and doc[1]["identity"] is None
    text = run.ok("pki", "inspect", out / "alice.crt")
    assert "identity:  spiffe://capstan.test/user/alice" in text
    assert "role:      tenant:acme" in text and "eku:       clientAuth" in text

    revoked = run.ok("pki", "revoke", "--dir", pki, "alice", "--reason", "key-compromise")
    assert revoked.startswith(f"revoked {records[1]['serial']} (key-compromise)")
    crl = tmp_path / "crl.pem"
    run.ok("pki", "crl", "--dir", pki, "--out", crl)
    parsed = x509.load_pem_x509_crl(crl.read_bytes())
    assert [f"{r.serial_number:x}" for r in parsed] == [records[1]["serial"]]
    assert "revoked (key-compromise)" in run.ok("pki", "list", "--dir", pki)


def test_sign_csr(run: Run, pki: Path, tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "admin")]))
        .add_extension(x509.SubjectAlternativeName(
            [x509.UniformResourceIdentifier("spiffe://capstan.test/user/root")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    (tmp_path / "req.csr").write_bytes(csr.public_bytes(serialization.Encoding.PEM))
    out = run.ok("pki", "sign-csr", "--dir", pki, "--csr", tmp_path / "req.csr", "user", "carol",
                 "--role", "viewer", "--ttl", "1d", "--out", tmp_path / "carol.crt")
    assert "signed spiffe://capstan.test/user/carol" in out
    chain = x509.load_pem_x509_certificates((tmp_path / "carol.crt").read_bytes())
    assert len(chain) == 2
    assert identity_of(chain[0]).uri == "spiffe://capstan.test/user/carol"
    assert role_of(chain[0]) == "viewer"
    assert chain[0].public_key() == key.public_key()


def test_token_key_commands(run: Run, pki: Path) -> None:
    first = json.loads(run.ok("pki", "jwks", "--dir", pki))
    assert len(first["keys"]) == 1 and "d" not in first["keys"][0]
    old_kid = first["keys"][0]["kid"]
    rotated = run.ok("pki", "rotate-token-key", "--dir", pki)
    new_kid = TokenKeyStore.open(pki / "token-keys").active_kid
    assert new_kid in rotated and new_kid != old_kid
    assert [k["kid"] for k in json.loads(run.ok("pki", "jwks", "--dir", pki))["keys"]] == [
        new_kid, old_kid,
    ]
    assert "active key" in run.fails("pki", "retire-token-key", "--dir", pki, "--", new_kid)
    run.ok("pki", "retire-token-key", "--dir", pki, "--", old_kid)
    assert [k["kid"] for k in json.loads(run.ok("pki", "jwks", "--dir", pki))["keys"]] == [new_kid]


def test_init_refusals(run: Run, pki: Path, tmp_path: Path, snapshot: Snapshot) -> None:
    before = snapshot(pki)
    err = run.fails("pki", "init", "--dir", pki, "--trust-domain", "capstan.test")
    assert "a PKI already exists in" in err and "--force" in err
    assert snapshot(pki) == before
    err = run.fails("pki", "init", "--dir", tmp_path / "new", "--trust-domain", "Bad_TD")
    assert err == "error: invalid trust domain 'Bad_TD': use lowercase DNS labels separated by dots"
    assert not (tmp_path / "new").exists()
    run.ok("pki", "init", "--dir", pki, "--trust-domain", "capstan.test", "--force")
    assert snapshot(pki)["root.crt"] != before["root.crt"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["node", "Node-1"], "invalid node name 'Node-1'"),
        (["user", "bob"], "a user certificate needs a role"),
        (["user", "bob", "--role", "root"], "invalid role 'root'"),
        (["user", "bob", "--role", "admin", "--dns", "x"], "carries no DNS or IP SANs"),
        (["node", "n", "--role", "admin"], "a node certificate carries no role"),
        (["node", "n", "--ttl", "1y"], "invalid duration '1y'"),
        (["node", "n", "--ttl", "31d"], "too long for a node certificate"),
        (["node", "n", "--ip", "localhost"], "invalid IP address 'localhost'"),
        (["node", "n", "--dns", "a b"], "invalid DNS name 'a b'"),
    ],
)
def test_issue_refusals(
    run: Run, pki: Path, out: Path, snapshot: Snapshot, args: list[str], message: str
) -> None:
    before = snapshot(pki)
    err = run.fails("pki", "issue", "--dir", pki, *args, "--out", out)
    assert message in err
    assert list(out.iterdir()) == []
    assert snapshot(pki) == before


def test_issue_output_refusals(run: Run, pki: Path, out: Path, snapshot: Snapshot) -> None:
    before = snapshot(pki)
    (out / "n.key").write_bytes(b"keep me")
    err = run.fails("pki", "issue", "--dir", pki, "node", "n", "--out", out)
    assert "n.key already exists; refusing to overwrite it" in err
    assert (out / "n.key").read_bytes() == b"keep me"
    assert snapshot(pki) == before  # nothing recorded for a certificate nobody received
    run.ok("pki", "issue", "--dir", pki, "node", "n", "--out", out, "--force")
    assert (out / "n.key").read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")


def test_missing_and_corrupted_pki(run: Run, pki: Path, out: Path, tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    commands: list[list[str | Path]] = [
        ["issue", "--dir", missing, "node", "n", "--out", out],
        ["list", "--dir", missing],
        ["revoke", "--dir", missing, "n"],
        ["crl", "--dir", missing, "--out", tmp_path / "crl.pem"],
        ["jwks", "--dir", missing],
        ["rotate-token-key", "--dir", missing],
    ]
    for args in commands:
        assert run.fails("pki", *args) == f"error: PKI directory {missing} does not exist"
    assert not missing.exists() and not (tmp_path / "crl.pem").exists()
    (pki / "state.json").write_text('{"version": 1, "trust_domain": ')
    err = run.fails("pki", "list", "--dir", pki)
    assert err == f"error: PKI state file {pki / 'state.json'} is corrupted: not valid JSON"
    err = run.fails("pki", "issue", "--dir", pki, "node", "n", "--out", out)
    assert "is corrupted" in err
    assert list(out.iterdir()) == []


def test_other_refusals(run: Run, pki: Path, tmp_path: Path) -> None:
    assert "no certificate with serial or name 'ghost'" in run.fails(
        "pki", "revoke", "--dir", pki, "ghost")
    assert run.fails("pki", "inspect", tmp_path / "none.crt") == (
        f"error: certificate file {tmp_path / 'none.crt'} does not exist"
    )
    (tmp_path / "junk.crt").write_text("junk")
    assert "holds no readable PEM certificate" in run.fails("pki", "inspect", tmp_path / "junk.crt")
    (tmp_path / "bad.csr").write_text("junk")
    assert "CSR is not a readable PEM certificate request" in run.fails(
        "pki", "sign-csr", "--dir", pki, "--csr", tmp_path / "bad.csr", "node", "n",
        "--out", tmp_path / "n.crt")
    assert not (tmp_path / "n.crt").exists()
    assert "CSR file" in run.fails(
        "pki", "sign-csr", "--dir", pki, "--csr", tmp_path / "nope.csr", "node", "n",
        "--out", tmp_path / "n.crt")
    assert "output directory" in run.fails(
        "pki", "crl", "--dir", pki, "--out", tmp_path / "no" / "crl.pem")
    assert "no token key with kid 'nope'" in run.fails(
        "pki", "retire-token-key", "--dir", pki, "nope")
    assert Authority.open(pki).list() == []


def test_issue_creates_a_missing_output_directory_0700(run: Run, pki: Path, out: Path) -> None:
    target = out / "new" / "alice"
    run.ok("pki", "issue", "--dir", pki, "user", "alice", "--role", "viewer", "--out", target)
    assert target.stat().st_mode & 0o777 == 0o700
    assert sorted(p.name for p in target.iterdir()) == ["alice.crt", "alice.key", "ca.crt"]
    assert (target / "alice.key").stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize(
    "args",
    [
        ["pki", "issue", "node", "n", "--out", "."],  # no --dir
        ["pki", "issue", "--dir", "x", "robot", "n", "--out", "."],  # bad kind
        ["pki", "init", "--dir", "x"],  # no --trust-domain
        ["pki", "revoke", "--dir", "x", "n", "--reason", "bored"],
        ["pki", "list", "--dir", "x", "-o", "yaml"],
    ],
)
def test_usage_errors(run: Run, args: list[str], tmp_path: Path) -> None:
    code, _, err = run(*args)
    assert code == 2
    assert "Error:" in err and "Traceback" not in err
    assert not Path("x").exists()


# The venv's own console script first (tests/run.sh also puts it on PATH).
CAPSTAN = shutil.which("capstan", path=str(Path(sys.executable).parent)) or shutil.which("capstan")


@pytest.mark.skipif(CAPSTAN is None, reason="capstan console script not installed")
def test_real_subprocess(tmp_path: Path) -> None:
    assert CAPSTAN is not None

    def capstan(*args: str | Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run([CAPSTAN, *map(str, args)], capture_output=True, text=True,
                              timeout=60, check=False)

    pki, out = tmp_path / "pki", tmp_path / "out"
    out.mkdir()
    assert capstan("pki", "init", "--dir", pki, "--trust-domain", "capstan.test").returncode == 0
    issued = capstan("pki", "issue", "--dir", pki, "node", "node-1", "--dns", "localhost",
                     "--out", out)
    assert issued.returncode == 0, issued.stderr
    inspected = capstan("pki", "inspect", out / "node-1.crt", "-o", "json")
    assert json.loads(inspected.stdout)[0]["identity"] == "spiffe://capstan.test/node/node-1"
    refused = capstan("pki", "issue", "--dir", pki, "user", "eve", "--out", out)
    assert refused.returncode == 1
    assert refused.stderr == (
        "error: a user certificate needs a role (admin, viewer or tenant:NAME)\n"
    )
    (pki / "state.json").write_bytes(b"\x00garbage")
    broken = capstan("pki", "list", "--dir", pki)
    assert broken.returncode == 1 and broken.stdout == ""
    state = pki / "state.json"
    assert broken.stderr == f"error: PKI state file {state} is corrupted: not valid JSON\n"


@pytest.mark.skipif(CAPSTAN is None, reason="capstan console script not installed")
def test_concurrent_cli_invocations(tmp_path: Path) -> None:
    assert CAPSTAN is not None
    pki, out = tmp_path / "pki", tmp_path / "out"
    out.mkdir()
    subprocess.run([CAPSTAN, "pki", "init", "--dir", str(pki), "--trust-domain", "capstan.test"],
                   check=True, capture_output=True, timeout=60)
    procs = [
        subprocess.Popen(
            [CAPSTAN, "pki", "issue", "--dir", str(pki), "node", f"node-{i}", "--out", str(out)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        for i in range(8)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    names = sorted(r.name for r in Authority.open(pki).list())
    assert names == sorted(f"node-{i}" for i in range(8))
    assert len(list(out.glob("node-*.key"))) == 8
