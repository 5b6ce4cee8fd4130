"""``capstan token inspect`` and ``capstan token mint`` through the real command."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.cli import main
from pki.replay import ReplayCache
from pki.tokenkeys import TokenKeyStore, TokenSigner
from pki.tokens import TokenVerifier

from ._support import AUD, ISS, NOW, OP, RES, SUB, CertPair, claims_for, forge, header_for

TD = "capstan.test"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def jwks_file(tmp_path: Path, store: TokenKeyStore) -> Path:
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(store.jwks()))
    return path


def test_inspect_explains_a_token(
    capsys: pytest.CaptureFixture[str], token: str, jwks_file: Path, signer: TokenSigner
) -> None:
    code, out, err = run(
        capsys, "token", "inspect", token, "--jwks", str(jwks_file), "--now", str(NOW + 10)
    )
    assert code == 0, err
    assert f"kid    {signer.kid}" in out
    assert "accepted shape" in out
    assert f"sub    {SUB}" in out and "caller" in out
    assert "2027-01-15T08:00:00Z (10 s ago)" in out  # iat, as UTC and relative
    assert "(in 50 s)" in out  # exp
    assert "status     valid" in out
    assert "signature  valid" in out


def test_inspect_json_and_expiry(
    capsys: pytest.CaptureFixture[str], token: str, certs: CertPair
) -> None:
    code, out, _ = run(capsys, "token", "inspect", token, "-o", "json", "--now", str(NOW + 61))
    assert code == 0
    doc = json.loads(out)
    assert doc["header"]["typ"] == "cap+jwt" and doc["header_problem"] is None
    assert doc["claims"]["cnf"] == {"x5t#S256": certs.caller.thumbprint}
    assert doc["status"] == "expired" and doc["expired"] is True
    assert doc["times"]["exp"]["utc"] == "2027-01-15T08:01:00Z"
    assert doc["times"]["exp"]["relative"] == "1 s ago"
    assert doc["signature"] == {"checked": False, "valid": None, "detail": "not checked"}


def test_inspect_reads_stdin_and_strips_bearer(token: str, jwks_file: Path, tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "orchestrator.cli",
            "token",
            "inspect",
            "-",
            "--jwks",
            str(jwks_file),
            "-o",
            "json",
        ],
        input=f"Bearer {token}\n",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["signature"]["valid"] is True


def test_inspect_flags_a_forged_header(
    capsys: pytest.CaptureFixture[str], signer: TokenSigner, certs: CertPair, jwks_file: Path
) -> None:
    bad = forge(
        signer,
        header_for(signer, jku="https://attacker.invalid/k"),
        claims_for(certs.caller.thumbprint),
    )
    code, out, err = run(capsys, "token", "inspect", bad, "--jwks", str(jwks_file))
    assert "refused by every node: header member 'jku' is not accepted" in out
    assert "NOT ACCEPTED" in out
    assert code == 1 and err.strip() == "error: invalid: header member 'jku' is not accepted"


@pytest.mark.parametrize(
    ("header", "claims", "reason"),
    [
        ({"alg": "none"}, {"sub": "x"}, "error: invalid: alg 'none' is not EdDSA"),
        (
            {"alg": "EdDSA", "typ": "cap+jwt", "kid": "k"},
            {"sub": "x", "exp": "soon"},
            "error: invalid: malformed: nbf/exp missing or not integers",
        ),
    ],
    ids=["alg-none", "no-lifetime"],
)
def test_inspect_of_a_token_every_node_refuses_exits_non_zero(
    capsys: pytest.CaptureFixture[str], header: dict[str, str], claims: dict[str, str], reason: str
) -> None:
    import base64

    def seg(doc: dict[str, str]) -> str:
        return base64.urlsafe_b64encode(json.dumps(doc).encode()).rstrip(b"=").decode()

    code, out, err = run(capsys, "token", "inspect", f"{seg(header)}.{seg(claims)}.")
    assert code == 1
    assert "claims" in out  # still explained
    assert err.startswith(reason) and err.count("\n") == 1


def test_inspect_bad_signature_exits_non_zero(
    capsys: pytest.CaptureFixture[str], token: str, jwks_file: Path
) -> None:
    h, p, s = token.split(".")
    tampered = f"{h}.{p}.{s[:10]}{'B' if s[10] == 'A' else 'A'}{s[11:]}"
    code, out, err = run(capsys, "token", "inspect", tampered, "--jwks", str(jwks_file))
    assert code == 1
    assert "signature  bad signature" in out
    assert err.count("\n") == 1 and err.startswith("error: invalid: bad signature")


@pytest.mark.parametrize(
    "garbage",
    ["garbage", "a.b.c", "...", "eyJhbGciOiJub25lIn0", "\u00e9.\u00e9.\u00e9", "x" * 9000],
    ids=["word", "abc", "dots", "one-segment", "non-ascii", "oversize"],
)
def test_inspect_garbage_is_one_line_error_without_traceback(garbage: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "token", "inspect", garbage],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert proc.stderr.startswith("error: invalid: ") and proc.stderr.count("\n") == 1
    assert "Traceback" not in proc.stderr


def test_inspect_bad_jwks_file(
    capsys: pytest.CaptureFixture[str], token: str, tmp_path: Path
) -> None:
    bad = tmp_path / "jwks.json"
    bad.write_text('{"keys":[{"kty":"OKP","crv":"Ed25519","x":"AAAA","d":"AAAA","kid":"k"}]}')
    code, _, err = run(capsys, "token", "inspect", token, "--jwks", str(bad))
    assert code == 1 and "private key material" in err


# -- mint --------------------------------------------------------------------------------


@pytest.fixture
def pki_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    directory = tmp_path / "pki"
    out = tmp_path / "out"
    out.mkdir()
    assert main(["pki", "init", "--dir", str(directory), "--trust-domain", TD]) == 0
    assert (
        main(["pki", "issue", "--dir", str(directory), "orchestrator", "main", "--out", str(out)])
        == 0
    )
    assert main(["pki", "issue", "--dir", str(directory), "node", "node-1", "--out", str(out)]) == 0
    capsys.readouterr()
    return directory


def test_mint_produces_a_token_the_node_accepts(
    capsys: pytest.CaptureFixture[str], pki_dir: Path
) -> None:
    cert = pki_dir.parent / "out" / "node-1.crt"
    code, out, err = run(
        capsys,
        "token",
        "mint",
        "--dir",
        str(pki_dir),
        "--aud",
        "node/node-2",
        "--op",
        OP,
        "--res",
        RES,
        "--cnf-cert",
        str(cert),
        "--ttl",
        "30s",
        "--epoch",
        "2",
        "--req-fields",
        '{"image": "local/busybox:1"}',
    )
    assert code == 0, err
    token = out.strip()
    from cryptography import x509

    from pki.certs import thumbprint
    from pki.tokens import request_digest

    store = TokenKeyStore.open(pki_dir / "token-keys")
    verifier = TokenVerifier(store.keyset(), audience=AUD, issuers=[ISS], replay=ReplayCache())
    cap = verifier.verify(
        token,
        peer_id=SUB,
        peer_thumbprint=thumbprint(x509.load_pem_x509_certificate(cert.read_bytes())),
        op=OP,
        res=RES,
        req=request_digest({"image": "local/busybox:1"}),
        min_epoch=2,
    )
    assert (cap.iss, cap.sub, cap.exp - cap.iat, cap.epoch) == (ISS, SUB, 30, 2)
    assert err.startswith("epoch 2: ")


def test_mint_defaults_to_the_first_live_epoch(
    capsys: pytest.CaptureFixture[str], pki_dir: Path
) -> None:
    cert = pki_dir.parent / "out" / "node-1.crt"
    code, out, err = run(
        capsys, "token", "mint", "--dir", str(pki_dir), "--aud", "node/node-2",
        "--op", OP, "--res", RES, "--cnf-cert", str(cert),
    )
    assert code == 0, err
    claims = json.loads(_b64(out.strip().split(".")[1]))
    assert claims["epoch"] == 1  # an orchestrator's first epoch; 0 is refused by live nodes
    assert err.startswith("epoch 1: nodes refuse")


def _b64(seg: str) -> bytes:
    import base64

    return base64.urlsafe_b64decode(seg + "=" * (-len(seg) % 4))


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--iss", "main"], "--iss must be a spiffe:// id"),
        (["--req", "x", "--req-fields", "{}"], "not both"),
        (["--req-fields", "[1]"], "JSON object"),
        (["--req-fields", "{"], "not JSON"),
        (["--ttl", "forever"], "invalid duration"),
        (["--req", "short"], "req must be a request_digest"),
    ],
)
def test_mint_refusals(
    capsys: pytest.CaptureFixture[str], pki_dir: Path, extra: list[str], message: str
) -> None:
    cert = pki_dir.parent / "out" / "node-1.crt"
    code, out, err = run(
        capsys,
        "token",
        "mint",
        "--dir",
        str(pki_dir),
        "--aud",
        "node/node-2",
        "--op",
        OP,
        "--res",
        RES,
        "--cnf-cert",
        str(cert),
        *extra,
    )
    assert code == 1 and out == ""
    assert message in err and err.count("\n") == 1


def test_mint_without_token_keys(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, certs: CertPair
) -> None:
    cert = tmp_path / "c.pem"
    cert.write_bytes(certs.caller.pem)
    code, out, err = run(
        capsys,
        "token",
        "mint",
        "--dir",
        str(tmp_path),
        "--aud",
        AUD,
        "--op",
        OP,
        "--res",
        RES,
        "--cnf-cert",
        str(cert),
        "--iss",
        ISS,
    )
    assert code == 1 and out == "" and "no token key store" in err


def test_mint_warns_when_sub_is_not_the_certificate(
    capsys: pytest.CaptureFixture[str], pki_dir: Path
) -> None:
    cert = pki_dir.parent / "out" / "node-1.crt"
    code, out, err = run(
        capsys,
        "token",
        "mint",
        "--dir",
        str(pki_dir),
        "--aud",
        "node/node-2",
        "--op",
        OP,
        "--res",
        RES,
        "--cnf-cert",
        str(cert),
        "--sub",
        "node/node-9",
    )
    assert code == 0 and out.count(".") == 2
    assert "warning" in err and "node-9" in err
