"""The certificate authority: layout, issuance rules, CSRs, revocation, CRL, state safety."""

from __future__ import annotations

import json
import multiprocessing
import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from pki.authority import DEFAULT_TTL, Authority
from pki.certs import dns_names, extended_key_usage, identity_of, ip_addresses, role_of
from pki.errors import CertificateError, ConfigError, PKIError, PKIExistsError, PKIStateError
from pki.identity import Kind
from pki.tokenkeys import TokenKeyStore

Snapshot = Callable[[Path], dict[str, bytes]]
KEY_FILES = ("root.key", "intermediate.key")


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# -- init / open ------------------------------------------------------------------


def test_init_layout(authority: Authority, pki_dir: Path, now: float) -> None:
    names = {p.name for p in pki_dir.iterdir()}
    assert names == {
        "ca.crt", "root.crt", "root.key", "intermediate.crt", "intermediate.key",
        "state.json", "token-keys", ".lock",
    }
    for key in KEY_FILES:
        assert _mode(pki_dir / key) == 0o600
    assert _mode(pki_dir) == 0o700
    root = x509.load_pem_x509_certificate((pki_dir / "root.crt").read_bytes())
    inter = authority.intermediate
    assert authority.trust_bundle() == (pki_dir / "ca.crt").read_bytes()
    assert authority.trust_roots() == [root]
    assert root.extensions.get_extension_for_class(x509.BasicConstraints).value.path_length == 1
    assert inter.extensions.get_extension_for_class(x509.BasicConstraints).value.path_length == 0
    assert inter.issuer == root.subject
    inter.verify_directly_issued_by(root)
    assert root.not_valid_after_utc.timestamp() - now == pytest.approx(3650 * 86400)
    assert inter.not_valid_after_utc.timestamp() - now == pytest.approx(365 * 86400)
    for cert in (root, inter):
        public = cert.public_key()
        assert isinstance(public, ec.EllipticCurvePublicKey) and public.curve.name == "secp256r1"
    # The token key store is created alongside, with one active Ed25519 key.
    store = TokenKeyStore.open(pki_dir / "token-keys")
    assert [k["kid"] for k in store.jwks()["keys"]] == [store.active_kid]
    assert authority.list() == []


def test_init_refuses_existing_pki(authority: Authority, pki_dir: Path, snapshot: Snapshot) -> None:
    before = snapshot(pki_dir)
    with pytest.raises(PKIExistsError, match=r"a PKI already exists in .*use --force"):
        Authority.init(pki_dir, "capstan.test")
    assert snapshot(pki_dir) == before


def test_init_refuses_a_stray_key(tmp_path: Path, snapshot: Snapshot) -> None:
    target = tmp_path / "pki"
    target.mkdir()
    (target / "root.key").write_bytes(b"precious")
    with pytest.raises(PKIExistsError, match=r"\(root.key\)"):
        Authority.init(target, "capstan.test")
    assert snapshot(target) == {"root.key": b"precious"}


def test_init_force_replaces_everything(authority: Authority, pki_dir: Path, now: float) -> None:
    authority.issue("node", "node-1", now=now)
    old_root = (pki_dir / "root.crt").read_bytes()
    old_kid = TokenKeyStore.open(pki_dir / "token-keys").active_kid
    fresh = Authority.init(pki_dir, "other.test", force=True, now=now)
    assert (pki_dir / "root.crt").read_bytes() != old_root
    assert fresh.trust_domain == "other.test"
    assert fresh.list() == []
    assert TokenKeyStore.open(pki_dir / "token-keys").active_kid != old_kid
    assert not [p for p in pki_dir.iterdir() if p.name.startswith(".init-")]
    for key in KEY_FILES:
        assert _mode(pki_dir / key) == 0o600


@pytest.mark.parametrize("fail_at", [1, 7, 8, 14])
def test_failed_forced_init_keeps_the_old_pki(
    authority: Authority, pki_dir: Path, now: float, snapshot: Snapshot,
    monkeypatch: pytest.MonkeyPatch, fail_at: int,
) -> None:
    # A rename failing part-way cannot be provoked for real as root: inject it.
    authority.issue("node", "node-1", now=now)
    before = snapshot(pki_dir)
    real_replace, calls = os.replace, []

    def flaky_replace(src: str | Path, dst: str | Path) -> None:
        # Count only the final swap: the old PKI's 7 entries aside, then 7 new ones in.
        if Path(dst).parent == pki_dir or Path(dst).parent.name == ".replaced":
            calls.append(src)
            if len(calls) == fail_at:
                raise OSError(28, "No space left on device")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", flaky_replace)
    with pytest.raises(ConfigError, match=r"cannot write the PKI in .*No space left on device"):
        Authority.init(pki_dir, "capstan.test", force=True, now=now)
    monkeypatch.undo()
    assert snapshot(pki_dir) == before
    assert not [p for p in pki_dir.iterdir() if p.name.startswith(".init-")]
    assert len(Authority.open(pki_dir).list()) == 1


def test_failed_init_removes_the_directory_it_created(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_replace, calls = os.replace, []

    def flaky_replace(src: str | Path, dst: str | Path) -> None:
        calls.append(src)
        if len(calls) == 3:
            raise OSError(5, "Input/output error")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", flaky_replace)
    with pytest.raises(ConfigError, match="Input/output error"):
        Authority.init(tmp_path / "pki", "capstan.test")
    assert not (tmp_path / "pki").exists()


def test_init_bad_arguments_create_nothing(tmp_path: Path) -> None:
    with pytest.raises(CertificateError, match=r"invalid trust domain 'Not_Valid'"):
        Authority.init(tmp_path / "pki", "Not_Valid")
    assert not (tmp_path / "pki").exists()
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match=r"exists and is not a directory"):
        Authority.init(tmp_path / "file", "capstan.test")
    with pytest.raises(PKIError, match=r"cannot outlive the root"):
        Authority.init(tmp_path / "pki", "capstan.test", root_ttl=10, intermediate_ttl=20)
    assert not (tmp_path / "pki").exists()


def test_open_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(PKIStateError, match=f"^PKI directory {tmp_path / 'nope'} does not exist$"):
        Authority.open(tmp_path / "nope")
    (tmp_path / "f").write_text("")
    with pytest.raises(PKIStateError, match=r"is not a directory"):
        Authority.open(tmp_path / "f")
    (tmp_path / "empty").mkdir()
    with pytest.raises(PKIStateError, match=r"^PKI state file .*empty/state.json is missing$"):
        Authority.open(tmp_path / "empty")


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", "not valid JSON"),
        (b"{not json", "not valid JSON"),
        (b"\xff\xfe", "not valid JSON"),
        (b"[]", "not a JSON object"),
        (b'{"version": 2}', "unsupported version 2"),
        (b'{"version": 1, "trust_domain": "X", "crl_number": 0, "certificates": []}',
         "bad trust_domain"),
        (b'{"version": 1, "trust_domain": "a.b", "crl_number": -1, "certificates": []}',
         "bad crl_number"),
        (b'{"version": 1, "trust_domain": "a.b", "crl_number": 0, "certificates": {}}',
         "certificates is not a list"),
        (b'{"version": 1, "trust_domain": "a.b", "crl_number": 0, "certificates": [1]}',
         "certificate #0 is not an object"),
        (b'{"version": 1, "trust_domain": "a.b", "crl_number": 0, "certificates": [{}]}',
         "certificate #0 lacks 'serial'"),
    ],
)
def test_corrupted_state_is_one_line_error(
    authority: Authority, pki_dir: Path, content: bytes, reason: str
) -> None:
    (pki_dir / "state.json").write_bytes(content)
    with pytest.raises(PKIStateError) as info:
        Authority.open(pki_dir)
    message = str(info.value)
    assert message.startswith(f"PKI state file {pki_dir / 'state.json'} is corrupted: ")
    assert reason in message
    assert "\n" not in message


def test_corrupted_record_field(authority: Authority, pki_dir: Path, now: float) -> None:
    authority.issue("node", "node-1", now=now)
    doc = json.loads((pki_dir / "state.json").read_text())
    doc["certificates"][0]["not_after"] = "tomorrow"
    (pki_dir / "state.json").write_text(json.dumps(doc))
    with pytest.raises(PKIStateError, match=r"certificate #0 has a field of the wrong type"):
        authority.list()
    doc["certificates"][0]["not_after"] = 1.0
    doc["certificates"][0]["serial"] = "xyz"
    (pki_dir / "state.json").write_text(json.dumps(doc))
    with pytest.raises(PKIStateError, match=r"certificate #0 has a bad serial or kind"):
        authority.issue("node", "node-2", now=now)


@pytest.mark.parametrize(
    ("name", "content", "reason"),
    [
        ("intermediate.crt", None, "intermediate certificate .* is missing"),
        ("intermediate.crt", b"garbage", "intermediate certificate .* is corrupted"),
        ("intermediate.key", None, "intermediate key .* is missing"),
        ("intermediate.key", b"garbage", "intermediate key .* is corrupted"),
        ("ca.crt", None, "trust bundle .* is missing"),
        ("ca.crt", b"garbage", "trust bundle .* is corrupted"),
    ],
)
def test_broken_pki_files(
    authority: Authority, pki_dir: Path, name: str, content: bytes | None, reason: str
) -> None:
    path = pki_dir / name
    if content is None:
        path.unlink()
    else:
        path.write_bytes(content)
    with pytest.raises(PKIStateError, match=reason):
        Authority.open(pki_dir)


def test_intermediate_key_must_be_private_and_match(authority: Authority, pki_dir: Path) -> None:
    key = pki_dir / "intermediate.key"
    os.chmod(key, 0o644)
    with pytest.raises(PKIStateError, match=r"readable by group or others .*644"):
        Authority.open(pki_dir)
    key.unlink()
    key.write_bytes((pki_dir / "root.key").read_bytes())
    os.chmod(key, 0o600)
    with pytest.raises(PKIStateError, match=r"does not match"):
        Authority.open(pki_dir)


def test_root_key_may_be_offline(authority: Authority, pki_dir: Path, now: float) -> None:
    (pki_dir / "root.key").unlink()
    issued = Authority.open(pki_dir).issue("node", "node-1", dns=["localhost"], now=now)
    authority.verifier().verify(issued.cert, [authority.intermediate], purpose="server", now=now)


# -- issuance ---------------------------------------------------------------------


def test_issue_profiles(authority: Authority, now: float) -> None:
    orch = authority.issue("orchestrator", "orch-1", dns=["LocalHost", "orch.example"],
                           ips=["127.0.0.1", "::1"], now=now)
    node = authority.issue(Kind.NODE, "node-1", ips=["127.0.0.2"], now=now)
    user = authority.issue("user", "alice", role="admin", now=now)
    server_client = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    assert extended_key_usage(orch.cert) == server_client
    assert extended_key_usage(node.cert) == server_client
    assert extended_key_usage(user.cert) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert identity_of(orch.cert).uri == "spiffe://capstan.test/orchestrator/orch-1"
    assert dns_names(orch.cert) == [
        "localhost",
        "orch.example",
        "orch-1.orchestrator.capstan.test.spiffe.invalid",  # its identity, and
        "orchestrator.capstan.test.spiffe.invalid",  # "an orchestrator" (HA clients)
    ]
    assert [str(ip) for ip in ip_addresses(orch.cert)] == ["127.0.0.1", "::1"]
    assert role_of(user.cert) == "admin" and user.role == "admin"
    assert role_of(node.cert) is None
    for issued, kind in ((orch, Kind.ORCHESTRATOR), (node, Kind.NODE), (user, Kind.USER)):
        assert issued.not_after == now + DEFAULT_TTL[kind]
        assert issued.cert.not_valid_before_utc.timestamp() == now - 300
        assert issued.cert.serial_number == issued.serial
        assert issued.key_pem is not None
        chain = x509.load_pem_x509_certificates(issued.chain_pem)
        assert chain == [issued.cert, authority.intermediate]
        key = serialization.load_pem_private_key(issued.key_pem, password=None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        assert key.public_key() == issued.cert.public_key()
        usage = issued.cert.extensions.get_extension_for_class(x509.KeyUsage)
        assert usage.critical and usage.value.digital_signature and not usage.value.key_cert_sign
    assert DEFAULT_TTL == {Kind.ORCHESTRATOR: 86400, Kind.NODE: 86400, Kind.USER: 8 * 3600}
    records = authority.list()
    assert [(r.serial, r.kind, r.name, r.role) for r in records] == [
        (orch.serial, Kind.ORCHESTRATOR, "orch-1", None),
        (node.serial, Kind.NODE, "node-1", None),
        (user.serial, Kind.USER, "alice", "admin"),
    ]
    assert all(not r.revoked and r.reason is None for r in records)


def test_issue_ttl(authority: Authority, now: float) -> None:
    assert authority.issue("user", "bob", role="viewer", ttl=30 * 86400, now=now).not_after == (
        now + 30 * 86400
    )
    assert authority.issue("node", "n", ttl=60, now=now).not_after == now + 60


@pytest.mark.parametrize(
    ("kind", "name", "kwargs", "error", "reason"),
    [
        ("node", "Node-1", {}, CertificateError, "invalid node name 'Node-1'"),
        ("node", "a/b", {}, CertificateError, "invalid node name 'a/b'"),
        ("admin", "x", {}, CertificateError, "unknown kind 'admin'"),
        ("user", "alice", {}, PKIError, "a user certificate needs a role"),
        ("user", "alice", {"role": "root"}, CertificateError, "invalid role 'root'"),
        ("user", "alice", {"role": "admin", "dns": ["x"]}, PKIError, "carries no DNS or IP"),
        ("node", "n", {"role": "admin"}, PKIError, "a node certificate carries no role"),
        ("node", "n", {"dns": ["*.example"]}, CertificateError, "invalid DNS name"),
        # Identity names are the CA's to set: a node asking for the orchestrator's
        # (in any case) would pass a client's identity check.
        (
            "node",
            "n",
            {"dns": ["O.Orchestrator.capstan.test.spiffe.invalid"]},
            PKIError,
            "reserved identity suffix",
        ),
        ("node", "n", {"dns": ["orchestrator.capstan.test.spiffe.invalid"]}, PKIError, "reserved"),
        ("node", "n", {"ips": ["300.1.1.1"]}, CertificateError, "invalid IP address"),
        ("node", "n", {"ttl": 59}, PKIError, "too short"),
        ("node", "n", {"ttl": 31 * 86400}, PKIError, "too long for a node certificate"),
        ("user", "u", {"role": "admin", "ttl": 31 * 86400}, PKIError, "at most 30d"),
    ],
)
def test_issue_refusals_record_nothing(
    authority: Authority, now: float, kind: str, name: str, kwargs: dict[str, object],
    error: type[Exception], reason: str,
) -> None:
    with pytest.raises(error, match=reason):
        authority.issue(kind, name, now=now, **kwargs)  # type: ignore[arg-type]
    assert authority.list() == []


def test_leaf_cannot_outlive_intermediate(tmp_path: Path, now: float) -> None:
    short = Authority.init(tmp_path / "pki", "capstan.test", now=now, intermediate_ttl=3600)
    with pytest.raises(PKIError, match=r"would outlive the intermediate CA"):
        short.issue("node", "n", now=now)
    assert short.issue("node", "n", ttl=1800, now=now).not_after == now + 1800
    with pytest.raises(PKIError, match=r"not valid yet"):
        short.issue("node", "n", ttl=60, now=now - 86400)


def test_write_issued(authority: Authority, tmp_path: Path, now: float) -> None:
    out = tmp_path / "out"
    out.mkdir()
    issued = authority.issue("node", "node-1", now=now)
    paths = authority.write_issued(issued, out)
    assert [p.name for p in paths] == ["node-1.crt", "node-1.key", "ca.crt"]
    assert _mode(out / "node-1.key") == 0o600
    assert (out / "node-1.crt").read_bytes() == issued.chain_pem
    assert (out / "node-1.key").read_bytes() == issued.key_pem
    assert (out / "ca.crt").read_bytes() == authority.trust_bundle()
    again = authority.issue("node", "node-1", now=now)
    with pytest.raises(PKIExistsError, match=r"node-1.key already exists"):
        authority.write_issued(again, out)
    assert (out / "node-1.key").read_bytes() == issued.key_pem
    assert (out / "node-1.crt").read_bytes() == issued.chain_pem
    authority.write_issued(again, out, overwrite=True)
    assert (out / "node-1.key").read_bytes() == again.key_pem
    assert _mode(out / "node-1.key") == 0o600
    with pytest.raises(ConfigError, match=r"output directory .* does not exist"):
        authority.write_issued(issued, tmp_path / "missing")
    assert not (tmp_path / "missing").exists()


# -- CSR ----------------------------------------------------------------------------


def _csr(key: ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey, uri: str) -> bytes:
    builder = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "attacker")]))
        .add_extension(
            x509.SubjectAlternativeName([
                x509.UniformResourceIdentifier(uri), x509.DNSName("evil.example"),
            ]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    )
    algorithm = None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return builder.sign(key, algorithm).public_bytes(serialization.Encoding.PEM)


def test_sign_csr_takes_identity_from_arguments_only(authority: Authority, now: float) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = _csr(key, "spiffe://capstan.test/orchestrator/boss")
    issued = authority.sign_csr(csr, "node", "node-7", dns=["node-7.local"], now=now)
    assert issued.key_pem is None
    assert issued.cert.public_key() == key.public_key()
    assert identity_of(issued.cert).uri == "spiffe://capstan.test/node/node-7"
    assert dns_names(issued.cert) == ["node-7.local", "node-7.node.capstan.test.spiffe.invalid"]
    assert issued.cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    assert issued.cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "node-7"
    authority.verifier().verify(issued.cert, [authority.intermediate], purpose="server", now=now)
    assert [r.name for r in authority.list()] == ["node-7"]
    with pytest.raises(PKIError, match=r"signed from a CSR"):
        authority.write_issued(issued, Path("/nonexistent"))


def test_sign_csr_refusals(authority: Authority, now: float) -> None:
    good = _csr(ec.generate_private_key(ec.SECP256R1()), "spiffe://capstan.test/node/x")
    # Flip one byte of the signature: the CSR still parses but no longer verifies.
    req = x509.load_pem_x509_csr(good)
    der = bytearray(req.public_bytes(serialization.Encoding.DER))
    der[-3] ^= 0x01
    tampered = x509.load_der_x509_csr(bytes(der)).public_bytes(serialization.Encoding.PEM)
    cases = [
        (tampered, "CSR signature does not verify"),
        (_csr(ed25519.Ed25519PrivateKey.generate(), "spiffe://x/node/y"), "not ECDSA P-256"),
        (_csr(ec.generate_private_key(ec.SECP384R1()), "spiffe://x/node/y"), "not ECDSA P-256"),
        (b"not a csr", "CSR is not a readable PEM certificate request"),
    ]
    for pem, reason in cases:
        with pytest.raises(CertificateError, match=reason):
            authority.sign_csr(pem, "node", "node-1", now=now)
    with pytest.raises(PKIError, match=r"needs a role"):
        authority.sign_csr(good, "user", "alice", now=now)
    assert authority.list() == []


# -- revocation and CRL ---------------------------------------------------------------


def test_revoke_by_serial_and_name(authority: Authority, now: float) -> None:
    a = authority.issue("node", "node-1", now=now)
    b = authority.issue("node", "node-1", now=now)
    c = authority.issue("user", "alice", role="viewer", now=now)
    d = authority.issue("node", "node-2", now=now)
    assert authority.revoke(f"{d.serial:X}", reason="key-compromise", now=now) == [d.serial]
    assert authority.revoke("node-1", reason="superseded", now=now) == [a.serial, b.serial]
    assert authority.revoked_serials() == {a.serial, b.serial, d.serial}
    colons = ":".join(f"{c.serial:x}"[i : i + 2] for i in range(0, len(f"{c.serial:x}"), 2))
    assert authority.revoke(colons, now=now) == [c.serial]
    records = {r.serial: r for r in authority.list()}
    assert records[d.serial].reason == "key-compromise" and records[d.serial].revoked_at == now
    assert records[a.serial].reason == "superseded"
    assert records[c.serial].reason == "unspecified"


def test_revoke_refusals(
    authority: Authority, pki_dir: Path, now: float, snapshot: Snapshot
) -> None:
    node = authority.issue("node", "shared", now=now)
    authority.issue("user", "shared", role="viewer", now=now)
    authority.revoke(node.serial, now=now)
    old = authority.issue("node", "old", ttl=60, now=now)
    before = snapshot(pki_dir)
    cases: list[tuple[int | str, str]] = [
        (node.serial, "already revoked"),
        (f"0x{node.serial:x}", "already revoked"),
        ("shared", "used by node and user certificates; say node/shared or user/shared"),
        ("nobody", "no certificate with serial or name 'nobody'"),
        (12345, "no certificate with serial 3039"),
        ("node/shared", "no unrevoked, unexpired certificate named 'node/shared'"),
        ("robot/x", "unknown kind 'robot'"),
    ]
    for target, reason in cases:
        with pytest.raises((PKIError, CertificateError), match=reason):
            authority.revoke(target, now=now)
    with pytest.raises(PKIError, match=r"no unrevoked, unexpired"):
        authority.revoke("old", now=old.not_after + 1)
    with pytest.raises(PKIError, match=r"unknown revocation reason 'oops'"):
        authority.revoke("user/shared", reason="oops", now=now)
    assert snapshot(pki_dir) == before
    assert authority.revoke("user/shared", now=now)


def test_revoke_serial_that_looks_like_a_name(authority: Authority, now: float) -> None:
    issued = authority.issue("node", "node-1", now=now)
    hexname = f"{issued.serial:x}"[:40]
    authority.issue("node", hexname, now=now)
    with pytest.raises(PKIError, match=r"both a serial and a name"):
        authority.revoke(hexname, now=now)
    assert authority.revoke(f"node/{hexname}", now=now) != [issued.serial]


def test_crl(authority: Authority, now: float) -> None:
    a = authority.issue("node", "node-1", now=now)
    b = authority.issue("node", "node-2", now=now)
    authority.revoke(a.serial, reason="key-compromise", now=now)
    first = x509.load_pem_x509_crl(authority.crl(now=now))
    second = x509.load_pem_x509_crl(authority.crl(now=now + 10))
    for crl in (first, second):
        assert crl.is_signature_valid(authority.intermediate.public_key())  # type: ignore[arg-type]
        assert crl.issuer == authority.intermediate.subject
        assert [r.serial_number for r in crl] == [a.serial]
        assert crl.get_revoked_certificate_by_serial_number(b.serial) is None
    entry = first.get_revoked_certificate_by_serial_number(a.serial)
    assert entry is not None
    assert entry.extensions.get_extension_for_class(x509.CRLReason).value.reason == (
        x509.ReasonFlags.key_compromise
    )
    numbers = [c.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
               for c in (first, second)]
    assert numbers == [1, 2]
    assert first.next_update_utc is not None
    assert first.next_update_utc.timestamp() == now + 7 * 86400


# -- concurrency ----------------------------------------------------------------------


def _issue_many(directory: str, worker: int, count: int) -> None:
    authority = Authority.open(Path(directory))
    for i in range(count):
        authority.issue("node", f"w{worker}-n{i}")
        if i % 2:
            authority.revoke(f"w{worker}-n{i}")


def test_concurrent_processes_do_not_lose_updates(authority: Authority, pki_dir: Path) -> None:
    workers, count = 6, 8
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_issue_many, args=(str(pki_dir), w, count)) for w in range(workers)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    records = Authority.open(pki_dir).list()
    assert len(records) == workers * count
    assert {r.name for r in records} == {f"w{w}-n{i}" for w in range(workers) for i in range(count)}
    assert len(authority.revoked_serials()) == workers * count // 2
    assert not [p for p in pki_dir.iterdir() if p.name.endswith(".tmp")]
