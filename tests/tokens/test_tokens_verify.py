"""Minting and verifying genuine tokens; what each token grants and to whom."""

from __future__ import annotations

import base64
import dataclasses
import json
import math
import threading
from collections.abc import Callable
from dataclasses import fields
from typing import Any

import jwt
import pytest

from pki import tokens
from pki._jose import b64url_decode
from pki.errors import (
    InvalidToken,
    PKIError,
    StaleEpoch,
    WrongAudience,
    WrongCaller,
    WrongOperation,
    WrongResource,
)
from pki.tokenkeys import TokenKeyStore, TokenSigner
from pki.tokens import (
    Capability,
    ReplayCache,
    TokenVerifier,
    check_signature,
    decode_unverified,
    mint,
    request_digest,
)

from ._support import AUD, ISS, NOW, OP, RES, SUB, CertPair, assert_refused


def _mint(signer: TokenSigner, certs: CertPair, **changes: Any) -> str:
    args: dict[str, Any] = {
        "iss": ISS,
        "sub": SUB,
        "aud": AUD,
        "op": OP,
        "res": RES,
        "cnf": certs.caller.thumbprint,
        "now": NOW,
    }
    args.update(changes)
    return mint(signer, **args)


def _segment(token: str, n: int) -> dict[str, Any]:
    value: dict[str, Any] = json.loads(b64url_decode(token.split(".")[n]))
    return value


def test_token_format(token: str, signer: TokenSigner, certs: CertPair) -> None:
    header_b64 = token.split(".", maxsplit=1)[0]
    assert b64url_decode(header_b64) == (
        b'{"alg":"EdDSA","typ":"cap+jwt","kid":"' + signer.kid.encode() + b'"}'
    )
    claims = _segment(token, 1)
    assert claims == {
        "iss": ISS,
        "sub": SUB,
        "aud": AUD,
        "op": OP,
        "res": RES,
        "cnf": {"x5t#S256": certs.caller.thumbprint},
        "iat": int(NOW),
        "nbf": int(NOW),
        "exp": int(NOW) + 60,
        "jti": claims["jti"],
        "epoch": 0,
    }
    assert len(b64url_decode(claims["jti"])) == 16
    assert "=" not in token


def test_jtis_are_unique(signer: TokenSigner, certs: CertPair) -> None:
    jtis = {_segment(_mint(signer, certs), 1)["jti"] for _ in range(200)}
    assert len(jtis) == 200


def test_fast_claims_encoding_matches_the_json_encoder(
    signer: TokenSigner, certs: CertPair
) -> None:
    odd = 'x"\\\n\u00e9\u2028\U0001f600/<>&'
    token = _mint(signer, certs, res=odd, op=odd, req=request_digest({"a": 1}), epoch=7, ttl=30)
    claims = _segment(token, 1)
    reference = tokens._claims_json(
        iss=ISS,
        sub=SUB,
        aud=AUD,
        op=odd,
        res=odd,
        req=claims["req"],
        cnf=claims["cnf"]["x5t#S256"],
        iat=claims["iat"],
        exp=claims["exp"],
        jti=claims["jti"],
        epoch=7,
        extra=None,
    )
    assert b64url_decode(token.split(".")[1]) == reference.encode()


def test_verify_returns_the_capability(
    verifier: TokenVerifier, token: str, call: dict[str, Any], signer: TokenSigner, certs: CertPair
) -> None:
    cap = verifier.verify(token, **call)
    claims = _segment(token, 1)
    assert cap == Capability(
        iss=ISS,
        sub=SUB,
        aud=AUD,
        op=OP,
        res=RES,
        req=None,
        cnf=certs.caller.thumbprint,
        iat=int(NOW),
        nbf=int(NOW),
        exp=int(NOW) + 60,
        jti=claims["jti"],
        epoch=0,
        kid=signer.kid,
    )
    assert dict(cap.extra) == {}
    # The fast constructor builds what the dataclass constructor builds, field by field.
    assert {f.name for f in fields(Capability)} == set(vars(cap))
    with pytest.raises(AttributeError):
        cap.op = "image.export"  # type: ignore[misc]
    assert cap.jti in verifier.replay


def test_bytes_token_is_accepted(verifier: TokenVerifier, token: str, call: dict[str, Any]) -> None:
    assert verifier.verify(token.encode(), **call).op == OP


def test_pyjwt_interoperates(store: TokenKeyStore, token: str) -> None:
    key = jwt.PyJWK(store.jwks()["keys"][0])
    claims = jwt.decode(
        token,
        key,
        algorithms=["EdDSA"],
        audience=AUD,
        options={"verify_exp": False, "verify_iat": False, "verify_nbf": False},
    )
    assert claims["sub"] == SUB
    assert jwt.get_unverified_header(token)["typ"] == "cap+jwt"


def test_extra_claims_are_carried(
    verifier: TokenVerifier, signer: TokenSigner, certs: CertPair, call: dict[str, Any]
) -> None:
    token = _mint(signer, certs, extra={"task": "t-42", "n": [1, 2]})
    cap = verifier.verify(token, **call)
    assert dict(cap.extra) == {"task": "t-42", "n": [1, 2]}


def test_clock_is_injected(
    make_verifier: Callable[..., TokenVerifier], token: str, call: dict[str, Any]
) -> None:
    verifier = make_verifier(clock=lambda: NOW + 10)
    assert verifier.verify(token, **call).exp == int(NOW) + 60


@pytest.mark.parametrize("offset", [-5, 0, 30, 64.9])
def test_accepted_within_lifetime_and_leeway(
    verifier: TokenVerifier, token: str, call: dict[str, Any], offset: float
) -> None:
    verifier.verify(token, **call, now=NOW + offset)


# -- minting refuses what no verifier would accept ---------------------------------


@pytest.mark.parametrize(
    "changes",
    [
        {"sub": ""},
        {"aud": 5},
        {"op": None},
        {"cnf": "AAAA"},
        {"cnf": "aa" * 32},
        {"req": "not-a-digest"},
        {"ttl": 0},
        {"ttl": -1},
        {"ttl": math.inf},
        {"ttl": math.nan},
        {"ttl": True},
        {"epoch": -1},
        {"epoch": True},
        {"epoch": 1.0},
        {"extra": {"sub": "someone-else"}},
        {"extra": {"exp": 1}},
        {"extra": {"x": math.nan}},
        {"extra": {"x": object()}},
    ],
)
def test_mint_refusals(signer: TokenSigner, certs: CertPair, changes: dict[str, Any]) -> None:
    with pytest.raises(PKIError):
        _mint(signer, certs, **changes)


# -- request digests ----------------------------------------------------------------


def test_request_digest_is_canonical() -> None:
    a = request_digest({"image": "local/busybox:1", "command": ["sleep", "1"], "cpu": 0.25})
    b = request_digest({"cpu": 0.25, "command": ["sleep", "1"], "image": "local/busybox:1"})
    assert a == b and len(a) == 43 and "=" not in a
    import hashlib

    canonical = b'{"command":["sleep","1"],"cpu":0.25,"image":"local/busybox:1"}'
    assert a == base64.urlsafe_b64encode(hashlib.sha256(canonical).digest()).rstrip(b"=").decode()
    assert (
        request_digest({"s": "\u00e9"})
        == base64.urlsafe_b64encode(hashlib.sha256('{"s":"\u00e9"}'.encode()).digest())
        .rstrip(b"=")
        .decode()
    )
    assert request_digest({"command": ["sleep", "2"]}) != request_digest(
        {"command": ["sleep", "1"]}
    )


@pytest.mark.parametrize(
    "fields_",
    [
        {"x": math.nan},
        {"x": math.inf},
        {"x": -math.inf},
        {"x": b"bytes"},
        {"x": {1: "int key"}},
        {"x": {"\ud800": 1}},
        {"x": "\udfff"},
        {"x": {1, 2}},
        "not a mapping",
    ],
)
def test_request_digest_refusals(fields_: Any) -> None:
    with pytest.raises(WrongResource):
        request_digest(fields_)


def test_request_digest_deep_nesting_is_refused() -> None:
    nested: Any = 1
    for _ in range(100):
        nested = [nested]
    with pytest.raises(WrongResource):
        request_digest({"x": nested})


def test_req_binds_the_parameters(
    verifier: TokenVerifier, signer: TokenSigner, certs: CertPair, call: dict[str, Any]
) -> None:
    params = {"image": "local/busybox:1", "command": ["sleep", "1"]}
    token = _mint(signer, certs, op="container.create", req=request_digest(params))
    create = {**call, "op": "container.create"}
    other = request_digest({**params, "command": ["sh", "-c", "evil"]})
    assert_refused(verifier, token, WrongResource, **create, req=other)
    # A token binding parameters is refused by a call that does not check them.
    assert_refused(verifier, token, WrongResource, **create)
    assert verifier.verify(token, **create, req=request_digest(dict(params))).req is not None


def test_req_required_when_the_call_has_parameters(
    verifier: TokenVerifier, token: str, call: dict[str, Any]
) -> None:
    assert_refused(verifier, token, WrongResource, **call, req=request_digest({"a": 1}))
    verifier.verify(token, **call)


# -- binding to audience, caller, operation, resource, epoch --------------------------


def test_wrong_audience(
    make_verifier: Callable[..., TokenVerifier], token: str, call: dict[str, Any]
) -> None:
    other_node = make_verifier(audience="spiffe://capstan.test/node/node-3")
    assert_refused(other_node, token, WrongAudience, **call)


def test_wrong_caller_identity(verifier: TokenVerifier, token: str, call: dict[str, Any]) -> None:
    assert_refused(
        verifier, token, WrongCaller, **{**call, "peer_id": "spiffe://capstan.test/node/node-3"}
    )
    verifier.verify(token, **call)  # the refusal did not burn it


def test_cnf_of_another_certificate_of_the_same_ca(
    verifier: TokenVerifier, token: str, call: dict[str, Any], certs: CertPair
) -> None:
    # Same CA, same SPIFFE id, different certificate: a stolen token is useless
    # without the certificate's private key.
    assert certs.other.thumbprint != certs.caller.thumbprint
    assert_refused(
        verifier, token, WrongCaller, **{**call, "peer_thumbprint": certs.other.thumbprint}
    )
    verifier.verify(token, **call)


def _variants(thumbprint: str) -> dict[str, str]:
    digest = b64url_decode(thumbprint)
    return {
        "padded": thumbprint + "=",
        "hex": digest.hex(),
        "HEX": digest.hex().upper(),
        "std-base64": base64.b64encode(digest).decode(),
        "std-base64-unpadded": base64.b64encode(digest).decode().rstrip("="),
        "uppercase": thumbprint.upper(),
        "lowercase": thumbprint.lower(),
        "whitespace": thumbprint + " ",
        "empty": "",
    }


def test_peer_thumbprint_encoding_variants_do_not_match(
    verifier: TokenVerifier, token: str, call: dict[str, Any], certs: CertPair
) -> None:
    for name, variant in _variants(certs.caller.thumbprint).items():
        assert variant != certs.caller.thumbprint, name
        assert_refused(verifier, token, WrongCaller, **{**call, "peer_thumbprint": variant})
    verifier.verify(token, **call)


def test_wrong_operation(verifier: TokenVerifier, token: str, call: dict[str, Any]) -> None:
    assert_refused(verifier, token, WrongOperation, **{**call, "op": "container.remove"})
    assert_refused(verifier, token, WrongOperation, **{**call, "op": "Container.Start"})
    verifier.verify(token, **call)


def test_wrong_resource(verifier: TokenVerifier, token: str, call: dict[str, Any]) -> None:
    assert_refused(verifier, token, WrongResource, **{**call, "res": "c-other"})
    assert_refused(verifier, token, WrongResource, **{**call, "res": RES + " "})
    verifier.verify(token, **call)


def test_stale_epoch(
    verifier: TokenVerifier, signer: TokenSigner, certs: CertPair, call: dict[str, Any]
) -> None:
    token = _mint(signer, certs, epoch=3)
    assert_refused(verifier, token, StaleEpoch, **call, min_epoch=4)
    assert verifier.verify(token, **call, min_epoch=3).epoch == 3


def test_issuer_not_allowed(
    make_verifier: Callable[..., TokenVerifier], token: str, call: dict[str, Any]
) -> None:
    verifier = make_verifier(issuers=["spiffe://capstan.test/orchestrator/other"])
    assert_refused(verifier, token, InvalidToken, **call)


def test_reasons_are_coarse_and_details_precise(
    verifier: TokenVerifier, token: str, call: dict[str, Any]
) -> None:
    err = assert_refused(verifier, token, WrongOperation, **{**call, "op": "image.export"})
    assert err.reason == "wrong operation"
    assert "image.export" in err.detail and OP in err.detail


# -- rotation -------------------------------------------------------------------------


def test_rotation_verify_only_key_accepted_until_retired(
    store: TokenKeyStore, certs: CertPair, call: dict[str, Any]
) -> None:
    old_signer = store.signer()
    before_rotation = [_mint(old_signer, certs) for _ in range(2)]
    store.rotate(now=NOW)
    new_signer = store.signer()
    assert new_signer.kid != old_signer.kid
    # The node reloads its JWKS through a callable, as node/server.py does.
    current = {"keys": store.keyset()}
    verifier = TokenVerifier(
        lambda: current["keys"],
        audience=AUD,
        issuers=[ISS],
        replay=ReplayCache(),
        clock=lambda: NOW,
    )
    assert verifier.verify(before_rotation[0], **call).kid == old_signer.kid
    assert verifier.verify(_mint(new_signer, certs), **call).kid == new_signer.kid

    store.retire(old_signer.kid, now=NOW)
    current["keys"] = store.keyset()
    err = assert_refused(verifier, before_rotation[1], InvalidToken, **call)
    assert "not a trusted token key" in err.detail
    assert verifier.verify(_mint(new_signer, certs), **call).kid == new_signer.kid


def test_broken_key_source_refuses(store: TokenKeyStore, token: str, call: dict[str, Any]) -> None:
    def broken() -> Any:
        raise OSError("JWKS file vanished")

    verifier = TokenVerifier(broken, audience=AUD, issuers=[ISS], replay=ReplayCache())
    assert_refused(verifier, token, InvalidToken, **call)


@pytest.mark.parametrize(
    "options",
    [
        {"audience": ""},
        {"issuers": []},
        {"issuers": ISS},
        {"max_ttl": 0},
        {"leeway": -1},
    ],
)
def test_verifier_configuration_refusals(store: TokenKeyStore, options: dict[str, Any]) -> None:
    args: dict[str, Any] = {"audience": AUD, "issuers": [ISS], "replay": ReplayCache()}
    args.update(options)
    with pytest.raises(PKIError):
        TokenVerifier(store.keyset(), **args)


def test_concurrent_use_of_one_token_succeeds_once(
    verifier: TokenVerifier, token: str, call: dict[str, Any]
) -> None:
    results: list[str] = []
    barrier = threading.Barrier(8)

    def attempt() -> None:
        barrier.wait()
        try:
            verifier.verify(token, **call)
            results.append("ok")
        except InvalidToken as exc:
            results.append(type(exc).__name__)

    threads = [threading.Thread(target=attempt) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == ["ReplayedToken"] * 7 + ["ok"]


def test_thumbprint_matches_the_certificate_module(certs: CertPair) -> None:
    from cryptography import x509

    from pki.certs import thumbprint
    from pki.tokens import thumbprint_of_der

    cert = x509.load_pem_x509_certificate(certs.caller.pem)
    assert thumbprint_of_der(certs.caller.der) == thumbprint(cert) == certs.caller.thumbprint


def test_capability_is_hashable_and_compares_by_claims(
    verifier: TokenVerifier, token: str, call: dict[str, Any]
) -> None:
    cap = verifier.verify(token, **call)
    assert hash(cap) == hash(dataclasses.replace(cap))
    assert cap == dataclasses.replace(cap) != dataclasses.replace(cap, res="other")


def test_check_signature_and_decode_unverified(
    store: TokenKeyStore, token: str, signer: TokenSigner
) -> None:
    kid, claims = check_signature(token, store.keyset())
    assert kid == signer.kid and claims["op"] == OP
    _, header, unverified = decode_unverified(token)
    assert header["kid"] == kid and unverified == claims
    signing_input = token.rsplit(".", 1)[0]
    with pytest.raises(InvalidToken):
        check_signature(f"{signing_input}.{'A' * 86}", store.keyset())
    with pytest.raises(InvalidToken):
        decode_unverified("not.a.token")
    assert not store.jwks()["keys"][0].get("d")
