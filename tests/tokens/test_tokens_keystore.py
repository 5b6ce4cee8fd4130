"""TokenKeyStore on disk and KeySet/JWKS strictness."""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from pki._jose import b64url_encode
from pki.errors import ConfigError, PKIError, PKIExistsError, PKIStateError
from pki.tokenkeys import KeySet, TokenKeyStore, TokenSigner, kid_of

from ._support import NOW


def _files(path: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(path.iterdir()) if p.is_file()}


def test_create_writes_one_active_key_0600(tmp_path: Path) -> None:
    path = tmp_path / "token-keys"
    store = TokenKeyStore.create(path, now=NOW)
    key_file = path / f"key-{store.active_kid}.pem"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.stat().st_mode) == 0o700
    assert [(e.kid, e.state, e.created) for e in store.entries] == [
        (store.active_kid, "active", NOW)
    ]
    index = json.loads((path / "index.json").read_text())
    assert set(index["keys"][0]) == {"kid", "x", "state", "created", "verify_only_since", "retired"}
    reopened = TokenKeyStore.open(path)
    assert reopened.active_kid == store.active_kid
    assert reopened.signer().kid == store.active_kid


def test_kid_is_the_deterministic_thumbprint(store: TokenKeyStore) -> None:
    signer = store.signer()
    assert signer.kid == kid_of(signer.public_key) == store.active_kid
    x = b64url_encode(
        signer.public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    )
    # RFC 7638 members in lexicographic order, then truncated to 128 bits.
    canonical = '{"crv":"Ed25519","kty":"OKP","x":"' + x + '"}'
    assert store.active_kid == b64url_encode(hashlib.sha256(canonical.encode()).digest()[:16])


def test_create_refuses_an_existing_store_and_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "token-keys"
    TokenKeyStore.create(path, now=NOW)
    before = _files(path)
    with pytest.raises(PKIExistsError):
        TokenKeyStore.create(path, now=NOW)
    assert _files(path) == before


def test_create_refuses_a_non_empty_directory(tmp_path: Path) -> None:
    (tmp_path / "stray").write_text("x")
    with pytest.raises(PKIExistsError):
        TokenKeyStore.create(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stray"]


def test_open_missing_store(tmp_path: Path) -> None:
    with pytest.raises(PKIStateError):
        TokenKeyStore.open(tmp_path / "nothing")


def test_rotate_then_retire(store: TokenKeyStore) -> None:
    old = store.active_kid
    new = store.rotate(now=NOW)
    assert new != old and store.active_kid == new
    states = {e.kid: e.state for e in store.entries}
    assert states == {old: "verify-only", new: "active"}
    assert [k["kid"] for k in store.jwks()["keys"]] == [new, old]
    assert set(store.keyset()) == {old, new}
    assert store.signer().kid == new

    with pytest.raises(PKIError, match="active"):
        store.retire(new, now=NOW)
    store.retire(old, now=NOW + 1)
    assert not (store.path / f"key-{old}.pem").exists()
    assert [k["kid"] for k in store.jwks()["keys"]] == [new]
    assert set(store.keyset()) == {new}
    retired = next(e for e in store.entries if e.kid == old)
    assert (retired.state, retired.retired) == ("retired", NOW + 1)
    # Another process sees the same state; retiring twice changes nothing.
    other = TokenKeyStore.open(store.path)
    assert [(e.kid, e.state) for e in other.entries] == [(e.kid, e.state) for e in store.entries]
    other.retire(old)
    with pytest.raises(PKIError, match="no token key"):
        other.retire("nope")


def test_reload_follows_another_process(store: TokenKeyStore) -> None:
    other = TokenKeyStore.open(store.path)
    old = other.signer().kid
    new = store.rotate(now=NOW)
    store.retire(old, now=NOW)
    assert other.active_kid == old  # a stale view until reloaded
    other.reload()
    assert other.active_kid == new and other.signer().kid == new


def test_jwks_members_are_public_only(store: TokenKeyStore) -> None:
    store.rotate(now=NOW)
    for jwk in store.jwks()["keys"]:
        assert set(jwk) == {"kty", "crv", "x", "kid", "alg", "use"}
        assert (jwk["kty"], jwk["crv"], jwk["alg"], jwk["use"]) == (
            "OKP",
            "Ed25519",
            "EdDSA",
            "sig",
        )


def test_world_readable_private_key_is_refused(store: TokenKeyStore) -> None:
    path = store.path / f"key-{store.active_kid}.pem"
    os.chmod(path, 0o644)
    with pytest.raises(PKIStateError, match="readable"):
        TokenKeyStore.open(store.path).signer()


def test_tampered_index_is_refused(store: TokenKeyStore) -> None:
    index = store.path / "index.json"
    doc = json.loads(index.read_text())
    doc["keys"][0]["kid"] = "AAAAAAAAAAAAAAAAAAAAAA"
    index.write_text(json.dumps(doc))
    with pytest.raises(PKIStateError, match="does not match"):
        TokenKeyStore.open(store.path)


def test_signer_refuses_a_wrong_kid() -> None:
    with pytest.raises(PKIStateError):
        TokenSigner(Ed25519PrivateKey.generate(), "not-its-kid")


# -- KeySet.from_jwks -------------------------------------------------------------


def _jwk(**changes: Any) -> dict[str, Any]:
    key = Ed25519PrivateKey.generate()
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    jwk: dict[str, Any] = {
        "kty": "OKP",
        "crv": "Ed25519",
        "x": b64url_encode(raw),
        "kid": kid_of(key.public_key()),
        "alg": "EdDSA",
        "use": "sig",
    }
    jwk.update(changes)
    return jwk


def test_keyset_round_trip(store: TokenKeyStore) -> None:
    data = json.dumps(store.jwks()).encode()
    keys = KeySet.from_jwks(data)
    assert keys.kids == (store.active_kid,)
    assert store.active_kid in keys and len(keys) == 1
    assert keys.get("unknown") is None
    assert KeySet.from_jwks(keys.jwks()).kids == keys.kids


def test_jwks_with_private_member_d_is_refused() -> None:
    private = Ed25519PrivateKey.generate()
    d = private.private_bytes(
        serialization.Encoding.Raw,
        serialization.PrivateFormat.Raw,
        serialization.NoEncryption(),
    )
    jwk = _jwk()
    jwk["d"] = b64url_encode(d)
    with pytest.raises(ConfigError, match="private"):
        KeySet.from_jwks({"keys": [jwk]})


@pytest.mark.parametrize(
    "mutate",
    [
        pytest.param(lambda j: j.update(kty="EC"), id="kty-EC"),
        pytest.param(lambda j: j.update(kty="oct", k="c2VjcmV0"), id="oct-symmetric"),
        pytest.param(lambda j: j.update(crv="X25519"), id="crv-X25519"),
        pytest.param(lambda j: j.update(crv="Ed448"), id="crv-Ed448"),
        pytest.param(lambda j: j.update(alg="HS256"), id="alg-HS256"),
        pytest.param(lambda j: j.update(alg="none"), id="alg-none"),
        pytest.param(lambda j: j.update(use="enc"), id="use-enc"),
        pytest.param(lambda j: j.update(x5u="https://example.invalid/k"), id="x5u"),
        pytest.param(lambda j: j.update(kid="someone-else"), id="kid-not-thumbprint"),
        pytest.param(lambda j: j.update(x=j["x"] + "="), id="x-padded"),
        pytest.param(lambda j: j.update(x=j["x"][:-2]), id="x-short"),
        pytest.param(lambda j: j.update(x=5), id="x-number"),
        pytest.param(lambda j: j.pop("kid"), id="kid-missing"),
        pytest.param(lambda j: j.update(key_ops=["sign"]), id="key_ops-sign"),
    ],
)
def test_jwks_key_refusals(mutate: Any) -> None:
    jwk = _jwk()
    mutate(jwk)
    with pytest.raises(ConfigError):
        KeySet.from_jwks({"keys": [jwk]})


@pytest.mark.parametrize(
    "doc",
    [
        b"",
        b"not json",
        b"[]",
        b'{"keys": []}',
        b'{"keys": {}}',
        b'{"keys": [], "keys": []}',
        b'{"keys": [1]}',
        b'{"keys": [{"kty": NaN}]}',
        b'{"keys": [], "extra": 1}',
        "\ufeff{}".encode(),
        b"\xff\xfe{\x00}\x00",
    ],
)
def test_jwks_document_refusals(doc: bytes) -> None:
    with pytest.raises(ConfigError):
        KeySet.from_jwks(doc)


def test_jwks_duplicate_kid_is_refused() -> None:
    jwk = _jwk()
    with pytest.raises(ConfigError, match="duplicate"):
        KeySet.from_jwks({"keys": [jwk, dict(jwk)]})


def test_jwks_file_errors_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        KeySet.from_file(tmp_path / "missing.json")
