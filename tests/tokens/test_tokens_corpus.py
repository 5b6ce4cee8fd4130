"""The negative corpus: every way a token can be wrong, each refused exactly.

Every case asserts the precise exception class and that the replay cache did not
record anything (assert_refused). Tokens are forged with the real signing key
wherever the point is that a *genuine signature* does not rescue a bad token.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Callable
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from pki._jose import b64url_encode
from pki.errors import ExpiredToken, InvalidToken, ReplayedToken, TokenError
from pki.tokenkeys import TokenKeyStore, TokenSigner
from pki.tokens import MAX_TOKEN_BYTES, ReplayCache, TokenVerifier, mint

from ._support import (
    AUD,
    ISS,
    NOW,
    OP,
    RES,
    SUB,
    CertPair,
    assert_refused,
    b64,
    claims_for,
    compact,
    forge,
    header_for,
)

# -- algorithm confusion ------------------------------------------------------------


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE", ""])
@pytest.mark.parametrize("signature", ["", "AAAA"])
def test_alg_none(
    verifier: TokenVerifier,
    signer: TokenSigner,
    certs: CertPair,
    call: dict[str, Any],
    alg: str,
    signature: str,
) -> None:
    h = b64(compact(header_for(signer, alg=alg)))
    p = b64(compact(claims_for(certs.caller.thumbprint)))
    assert_refused(verifier, f"{h}.{p}.{signature}", InvalidToken, **call)


def _hs256(secret: bytes, header: dict[str, Any], claims: dict[str, Any]) -> str:
    signing_input = f"{b64(compact(header))}.{b64(compact(claims))}"
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(mac)}"


def _public_secrets(store: TokenKeyStore) -> dict[str, bytes]:
    """The public key in every form an HMAC key-confusion attack would try."""
    public = store.signer().public_key
    jwk = store.jwks()["keys"][0]
    return {
        "raw": public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw),
        "pem": public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
        "der": public.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
        "jwk-json": json.dumps(jwk).encode(),
        "jwks-json": json.dumps(store.jwks()).encode(),
        "x": jwk["x"].encode(),
    }


@pytest.mark.parametrize("form", ["raw", "pem", "der", "jwk-json", "jwks-json", "x"])
@pytest.mark.parametrize("alg", ["HS256", "EdDSA"])
def test_hmac_with_the_public_key_as_secret(
    verifier: TokenVerifier,
    store: TokenKeyStore,
    certs: CertPair,
    call: dict[str, Any],
    form: str,
    alg: str,
) -> None:
    secret = _public_secrets(store)[form]
    header = header_for(store.signer(), alg=alg)
    token = _hs256(secret, header, claims_for(certs.caller.thumbprint))
    assert_refused(verifier, token, InvalidToken, **call)


@pytest.mark.parametrize(
    "alg", ["ES256", "RS256", "PS256", "Ed25519", "ED25519", "eddsa", "EdDSA "]
)
def test_other_alg_names_with_a_genuine_signature(
    verifier: TokenVerifier, signer: TokenSigner, certs: CertPair, call: dict[str, Any], alg: str
) -> None:
    token = forge(signer, header_for(signer, alg=alg), claims_for(certs.caller.thumbprint))
    assert_refused(verifier, token, InvalidToken, **call)


# -- keys -----------------------------------------------------------------------------


def test_valid_signature_by_an_unknown_key(
    verifier: TokenVerifier, certs: CertPair, call: dict[str, Any]
) -> None:
    stranger = TokenSigner(Ed25519PrivateKey.generate())
    token = mint(
        stranger, iss=ISS, sub=SUB, aud=AUD, op=OP, res=RES, cnf=certs.caller.thumbprint, now=NOW
    )
    assert_refused(verifier, token, InvalidToken, **call)


def test_unknown_key_claiming_a_trusted_kid(
    verifier: TokenVerifier, signer: TokenSigner, certs: CertPair, call: dict[str, Any]
) -> None:
    stranger = TokenSigner(Ed25519PrivateKey.generate())
    token = forge(stranger, header_for(signer), claims_for(certs.caller.thumbprint))
    assert_refused(verifier, token, InvalidToken, **call)


def test_valid_signature_by_a_retired_key(
    store: TokenKeyStore,
    certs: CertPair,
    call: dict[str, Any],
    make_verifier: Callable[..., TokenVerifier],
) -> None:
    old = store.signer()
    token = mint(
        old, iss=ISS, sub=SUB, aud=AUD, op=OP, res=RES, cnf=certs.caller.thumbprint, now=NOW
    )
    store.rotate(now=NOW)
    store.retire(old.kid, now=NOW)
    assert_refused(make_verifier(keys=store.keyset()), token, InvalidToken, **call)


@pytest.mark.parametrize(
    "member",
    [
        {"jku": "https://attacker.invalid/jwks.json"},
        {"x5u": "https://attacker.invalid/cert.pem"},
        {"jwk": {"kty": "OKP", "crv": "Ed25519", "x": "A" * 43}},
        {"x5c": ["MIIB"]},
        {"crit": ["exp"]},
        {"crit": []},
        {"b64": False},
        {"zip": "DEF"},
        {"enc": "A256GCM"},
        {"cty": "JWT"},
        {"x5t#S256": "A" * 43},
        {"extra": 1},
    ],
    ids=lambda m: next(iter(m)),
)
def test_header_members_outside_the_allow_list(
    verifier: TokenVerifier,
    signer: TokenSigner,
    certs: CertPair,
    call: dict[str, Any],
    member: dict[str, Any],
) -> None:
    # jwk names the real key too: a key the token carries is never used.
    if "jwk" in member:
        member = {
            "jwk": {
                **member["jwk"],
                "x": b64url_encode(
                    signer.public_key.public_bytes(
                        serialization.Encoding.Raw, serialization.PublicFormat.Raw
                    )
                ),
            }
        }
    token = forge(signer, header_for(signer, **member), claims_for(certs.caller.thumbprint))
    assert_refused(verifier, token, InvalidToken, **call)


@pytest.mark.parametrize(
    "changes",
    [
        {"typ": "JWT"},
        {"typ": "CAP+JWT"},
        {"typ": "application/cap+jwt"},
        {"typ": "cap+jwt "},
        {"typ": None},
        {"typ": ["cap+jwt"]},
        {"kid": 5},
        {"kid": ""},
        {"kid": None},
    ],
)
def test_wrong_typ_or_kid(
    verifier: TokenVerifier,
    signer: TokenSigner,
    certs: CertPair,
    call: dict[str, Any],
    changes: dict[str, Any],
) -> None:
    token = forge(signer, header_for(signer, **changes), claims_for(certs.caller.thumbprint))
    assert_refused(verifier, token, InvalidToken, **call)


@pytest.mark.parametrize("member", ["typ", "kid", "alg"])
def test_missing_header_member(
    verifier: TokenVerifier,
    signer: TokenSigner,
    certs: CertPair,
    call: dict[str, Any],
    member: str,
) -> None:
    header = header_for(signer)
    del header[member]
    token = forge(signer, header, claims_for(certs.caller.thumbprint))
    assert_refused(verifier, token, InvalidToken, **call)


# -- claims: presence and JSON types ---------------------------------------------------

REQUIRED = ["iss", "sub", "aud", "op", "res", "cnf", "iat", "nbf", "exp", "jti", "epoch"]


@pytest.mark.parametrize("claim", REQUIRED)
def test_missing_required_claim(
    verifier: TokenVerifier,
    signer: TokenSigner,
    certs: CertPair,
    call: dict[str, Any],
    claim: str,
) -> None:
    claims = claims_for(certs.caller.thumbprint)
    del claims[claim]
    assert_refused(verifier, forge(signer, header_for(signer), claims), InvalidToken, **call)


def _wrong_types(thumbprint: str) -> list[Any]:
    t = int(NOW)
    return [
        pytest.param({"exp": str(t + 60)}, id="exp-string"),
        pytest.param({"exp": float(t + 60)}, id="exp-float"),
        pytest.param({"exp": True}, id="exp-bool"),
        pytest.param({"exp": None}, id="exp-null"),
        pytest.param({"iat": float(t)}, id="iat-float"),
        pytest.param({"iat": True, "nbf": True}, id="iat-bool"),
        pytest.param({"nbf": False}, id="nbf-bool"),
        pytest.param({"nbf": [t]}, id="nbf-list"),
        pytest.param({"iat": -1, "nbf": -1}, id="iat-negative"),
        pytest.param({"aud": [AUD]}, id="aud-list"),
        pytest.param({"aud": [AUD, "spiffe://capstan.test/node/node-3"]}, id="aud-list-2"),
        pytest.param({"aud": ""}, id="aud-empty"),
        pytest.param({"sub": 1}, id="sub-number"),
        pytest.param({"sub": ""}, id="sub-empty"),
        pytest.param({"iss": None}, id="iss-null"),
        pytest.param({"op": {"name": OP}}, id="op-object"),
        pytest.param({"op": [OP]}, id="op-list"),
        pytest.param({"res": None}, id="res-null"),
        pytest.param({"res": 42}, id="res-number"),
        pytest.param({"jti": 7}, id="jti-number"),
        pytest.param({"jti": "short"}, id="jti-short"),
        pytest.param({"jti": "A" * 21 + "B"}, id="jti-noncanonical"),
        pytest.param({"jti": "A" * 21 + "+"}, id="jti-std-base64"),
        pytest.param({"jti": "A" * 22 + "=="}, id="jti-padded"),
        pytest.param({"jti": "A" * 43}, id="jti-256-bit"),
        pytest.param({"epoch": "0"}, id="epoch-string"),
        pytest.param({"epoch": True}, id="epoch-bool"),
        pytest.param({"epoch": 0.0}, id="epoch-float"),
        pytest.param({"epoch": -1}, id="epoch-negative"),
        pytest.param({"cnf": thumbprint}, id="cnf-string"),
        pytest.param({"cnf": {"x5t": thumbprint}}, id="cnf-x5t-sha1-member"),
        pytest.param({"cnf": {"x5t#S256": thumbprint, "jkt": thumbprint}}, id="cnf-two-members"),
        pytest.param({"cnf": {"x5t#S256": [thumbprint]}}, id="cnf-list"),
        pytest.param({"cnf": {}}, id="cnf-empty"),
        pytest.param({"req": None}, id="req-null"),
        pytest.param({"req": 5}, id="req-number"),
        pytest.param({"req": "abc"}, id="req-not-digest"),
    ]


@pytest.mark.parametrize("changes", _wrong_types("A" * 42 + "E"))
def test_wrong_json_types(
    verifier: TokenVerifier,
    signer: TokenSigner,
    certs: CertPair,
    call: dict[str, Any],
    changes: dict[str, Any],
) -> None:
    if "cnf" in changes and isinstance(changes["cnf"], dict):
        changes = {
            "cnf": {
                k: (certs.caller.thumbprint if v == "A" * 42 + "E" else v)
                for k, v in changes["cnf"].items()
            }
        }
    claims = claims_for(certs.caller.thumbprint, **changes)
    assert_refused(verifier, forge(signer, header_for(signer), claims), InvalidToken, **call)


def _cnf_token_variants(thumbprint: str) -> dict[str, str]:
    digest = base64.urlsafe_b64decode(thumbprint + "=")
    return {
        "padded": thumbprint + "=",
        "hex": digest.hex(),
        "std-base64": base64.b64encode(digest).decode(),
        "std-base64-unpadded": base64.b64encode(digest).decode().rstrip("="),
    }


@pytest.mark.parametrize("variant", ["padded", "hex", "std-base64", "std-base64-unpadded"])
def test_cnf_encoding_variants_in_the_token(
    verifier: TokenVerifier,
    signer: TokenSigner,
    certs: CertPair,
    call: dict[str, Any],
    variant: str,
) -> None:
    value = _cnf_token_variants(certs.caller.thumbprint)[variant]
    assert value != certs.caller.thumbprint
    claims = claims_for(certs.caller.thumbprint, cnf={"x5t#S256": value})
    assert_refused(verifier, forge(signer, header_for(signer), claims), InvalidToken, **call)


def test_cnf_uppercase_variant_in_the_token(
    verifier: TokenVerifier, signer: TokenSigner, certs: CertPair, call: dict[str, Any]
) -> None:
    from pki.errors import WrongCaller

    # Well-formed base64url (the fixture picks such a certificate) but another value.
    claims = claims_for(certs.caller.thumbprint, cnf={"x5t#S256": certs.caller.thumbprint.upper()})
    assert_refused(verifier, forge(signer, header_for(signer), claims), WrongCaller, **call)


# -- time -------------------------------------------------------------------------------


def test_expired(verifier: TokenVerifier, token: str, call: dict[str, Any]) -> None:
    # exp is NOW+60 and the leeway 5 s: refused from NOW+65 on.
    assert_refused(verifier, token, ExpiredToken, **call, now=NOW + 65)
    assert_refused(verifier, token, ExpiredToken, **call, now=NOW + 3600)
    verifier.verify(token, **call, now=NOW + 64)


@pytest.mark.parametrize("claim", ["nbf", "iat"])
def test_not_yet_valid(
    verifier: TokenVerifier,
    signer: TokenSigner,
    certs: CertPair,
    call: dict[str, Any],
    claim: str,
) -> None:
    t = int(NOW) + 100
    changes = {"iat": t, "nbf": t, "exp": t + 60} if claim == "iat" else {"nbf": t, "exp": t + 60}
    token = forge(signer, header_for(signer), claims_for(certs.caller.thumbprint, **changes))
    assert_refused(verifier, token, ExpiredToken, **call)
    # Within the leeway of 5 s it is fine.
    verifier.verify(token, **call, now=t - 5)


def test_ttl_above_the_maximum(
    make_verifier: Callable[..., TokenVerifier],
    signer: TokenSigner,
    certs: CertPair,
    call: dict[str, Any],
) -> None:
    verifier = make_verifier(max_ttl=300)
    long = mint(
        signer,
        iss=ISS,
        sub=SUB,
        aud=AUD,
        op=OP,
        res=RES,
        cnf=certs.caller.thumbprint,
        now=NOW,
        ttl=301,
    )
    assert_refused(verifier, long, InvalidToken, **call)
    limit = mint(
        signer,
        iss=ISS,
        sub=SUB,
        aud=AUD,
        op=OP,
        res=RES,
        cnf=certs.caller.thumbprint,
        now=NOW,
        ttl=300,
    )
    verifier.verify(limit, **call)


@pytest.mark.parametrize(
    "changes",
    [
        {"exp": int(NOW)},  # exp == iat
        {"exp": int(NOW) - 1},  # exp before iat
        {"nbf": int(NOW) - 10},  # nbf before iat
        {"nbf": int(NOW) + 60},  # nbf == exp
    ],
)
def test_inconsistent_times(
    verifier: TokenVerifier,
    signer: TokenSigner,
    certs: CertPair,
    call: dict[str, Any],
    changes: dict[str, Any],
) -> None:
    token = forge(signer, header_for(signer), claims_for(certs.caller.thumbprint, **changes))
    assert_refused(verifier, token, InvalidToken, **call)


# -- replay -------------------------------------------------------------------------------


def test_replayed(verifier: TokenVerifier, token: str, call: dict[str, Any]) -> None:
    verifier.verify(token, **call)
    before = len(verifier.replay)
    with pytest.raises(TokenError) as info:
        verifier.verify(token, **call, now=NOW + 1)
    assert type(info.value) is ReplayedToken
    assert len(verifier.replay) == before


def test_replay_cache_full_refuses_new_tokens(
    make_verifier: Callable[..., TokenVerifier],
    signer: TokenSigner,
    certs: CertPair,
    call: dict[str, Any],
) -> None:
    verifier = make_verifier(replay=ReplayCache(max_entries=3))
    tokens = [
        mint(
            signer, iss=ISS, sub=SUB, aud=AUD, op=OP, res=RES, cnf=certs.caller.thumbprint, now=NOW
        )
        for _ in range(4)
    ]
    for t in tokens[:3]:
        verifier.verify(t, **call)
    assert_refused(verifier, tokens[3], InvalidToken, **call)
    # Once the remembered tokens have expired there is room again.
    late = mint(
        signer, iss=ISS, sub=SUB, aud=AUD, op=OP, res=RES, cnf=certs.caller.thumbprint, now=NOW + 70
    )
    verifier.verify(late, **call, now=NOW + 70)
    assert len(verifier.replay) == 1


# -- structure and encoding -----------------------------------------------------------------


def test_duplicate_header_member(
    verifier: TokenVerifier, signer: TokenSigner, certs: CertPair, call: dict[str, Any]
) -> None:
    header = b'{"alg":"EdDSA","typ":"cap+jwt","kid":"%s","alg":"EdDSA"}' % signer.kid.encode()
    token = forge(signer, header, claims_for(certs.caller.thumbprint))
    assert_refused(verifier, token, InvalidToken, **call)


@pytest.mark.parametrize("claim", ["sub", "aud", "op", "res", "exp", "jti", "cnf"])
def test_duplicate_claim(
    verifier: TokenVerifier,
    signer: TokenSigner,
    certs: CertPair,
    call: dict[str, Any],
    claim: str,
) -> None:
    claims = claims_for(certs.caller.thumbprint)
    body = compact(claims)[:-1] + b',"%s":%s}' % (claim.encode(), compact(claims[claim]))
    assert_refused(verifier, forge(signer, header_for(signer), body), InvalidToken, **call)


def test_duplicate_member_inside_cnf(
    verifier: TokenVerifier, signer: TokenSigner, certs: CertPair, call: dict[str, Any]
) -> None:
    tp = certs.caller.thumbprint
    body = compact(claims_for(tp)).replace(
        b'"cnf":{"x5t#S256":"%s"}' % tp.encode(),
        b'"cnf":{"x5t#S256":"%s","x5t#S256":"%s"}' % (certs.other.thumbprint.encode(), tp.encode()),
    )
    assert b'"x5t#S256":"' + certs.other.thumbprint.encode() in body
    assert_refused(verifier, forge(signer, header_for(signer), body), InvalidToken, **call)


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"null",
        b"[]",
        b'"string"',
        b" {}",
        b"{} ",
        b'{"a":NaN}',
        b'{"a":Infinity}',
        b"\xef\xbb\xbf{}",
        b"\xff\xfe{\x00}\x00",
        b'{"a":1}{"b":2}',
        b"[" * 3000 + b"]" * 3000,
        b'{"exp":' + b"9" * 4400 + b"}",
    ],
    ids=lambda p: repr(p[:12]),
)
def test_signed_garbage_payloads(
    verifier: TokenVerifier, signer: TokenSigner, call: dict[str, Any], payload: bytes
) -> None:
    assert_refused(verifier, forge(signer, header_for(signer), payload), InvalidToken, **call)


def _swap_last(segment: str) -> str:
    """Another spelling of the same bytes: only the unused low bits of the last char change."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    return segment[:-1] + alphabet[alphabet.index(segment[-1]) + 1]


@pytest.mark.parametrize(
    "mangle",
    [
        pytest.param(lambda h, p, s: f"{h}.{p}", id="two-segments"),
        pytest.param(lambda h, p, s: f"{h}.{p}.{s}.", id="trailing-dot"),
        pytest.param(lambda h, p, s: f"{h}.{p}.{s}.{s}", id="four-segments"),
        pytest.param(lambda h, p, s: f"{h}..{p}.{s}.{s}", id="five-segments-jwe"),
        pytest.param(lambda h, p, s: f".{p}.{s}", id="empty-header"),
        pytest.param(lambda h, p, s: f"{h}..{s}", id="empty-payload"),
        pytest.param(lambda h, p, s: f"{h}.{p}.", id="empty-signature"),
        pytest.param(lambda h, p, s: "..", id="dots"),
        pytest.param(lambda h, p, s: "", id="empty"),
        pytest.param(lambda h, p, s: f"{h}=.{p}.{s}", id="padded-header"),
        pytest.param(lambda h, p, s: f"{h}.{p}=.{s}", id="padded-payload"),
        pytest.param(lambda h, p, s: f"{h}.{p}.{s}==", id="padded-signature"),
        pytest.param(lambda h, p, s: f"{h}.{p[:-4]}+{p[-3:]}.{s}", id="plus-in-payload"),
        pytest.param(lambda h, p, s: f"{h}.{p[:-4]}/{p[-3:]}.{s}", id="slash-in-payload"),
        pytest.param(lambda h, p, s: f"{h}.{p[:10]} {p[10:]}.{s}", id="space-in-payload"),
        pytest.param(lambda h, p, s: f"{h}.{p[:10]}\n{p[10:]}.{s}", id="newline-in-payload"),
        pytest.param(lambda h, p, s: f"{h}.{p}.{s[:10]}*{s[11:]}", id="star-in-signature"),
        pytest.param(lambda h, p, s: f" {h}.{p}.{s}", id="leading-space"),
        pytest.param(lambda h, p, s: f"{h}.{p}.{s}\n", id="trailing-newline"),
        pytest.param(lambda h, p, s: f"Bearer {h}.{p}.{s}", id="bearer-prefix"),
        pytest.param(lambda h, p, s: f"{h}.{p}.{_swap_last(s)}", id="noncanonical-signature"),
        pytest.param(lambda h, p, s: f"{h}.{p}.{s[:-1]}", id="short-signature"),
        pytest.param(lambda h, p, s: f"{h}.{p}.{s}AA", id="long-signature"),
        pytest.param(lambda h, p, s: f"{h}.{p}.{s.swapcase()}", id="swapcase-signature"),
        pytest.param(
            lambda h, p, s: f"{h}.{p}.{s[:10]}{'B' if s[10] == 'A' else 'A'}{s[11:]}",
            id="bad-signature",
        ),
        pytest.param(lambda h, p, s: f"{h}.{p}.\u0410{s[1:]}", id="cyrillic-signature"),
        pytest.param(lambda h, p, s: f"{h}\u2024{p}\u2024{s}", id="one-dot-leader"),
    ],
)
def test_structure_and_encoding(
    verifier: TokenVerifier,
    token: str,
    call: dict[str, Any],
    mangle: Callable[[str, str, str], str],
) -> None:
    h, p, s = token.split(".")
    assert_refused(verifier, mangle(h, p, s), InvalidToken, **call)
    verifier.verify(token, **call)  # none of it burnt the genuine token


def test_noncanonical_payload_encoding(
    verifier: TokenVerifier, signer: TokenSigner, certs: CertPair, call: dict[str, Any]
) -> None:
    # Pick a payload length whose encoding has spare bits, then sign the
    # non-canonical spelling: the signature is over exactly those characters.
    claims = claims_for(certs.caller.thumbprint)
    while len(compact(claims)) % 3 == 0:
        claims["res"] = claims["res"] + "x"
    call = {**call, "res": claims["res"]}
    h = b64(compact(header_for(signer)))
    p = _swap_last(b64(compact(claims)))
    signing_input = f"{h}.{p}"
    token = f"{signing_input}.{b64(signer.sign(signing_input.encode()))}"
    assert_refused(verifier, token, InvalidToken, **call)


def test_oversize_token_rejected_before_parsing(
    store: TokenKeyStore, signer: TokenSigner, certs: CertPair, call: dict[str, Any]
) -> None:
    lookups: list[int] = []

    def keys() -> Any:
        lookups.append(1)
        return store.keyset()

    verifier = TokenVerifier(
        keys, audience=AUD, issuers=[ISS], replay=ReplayCache(), clock=lambda: NOW
    )

    def sized(size: int) -> str:
        pad = 0
        while True:
            t = mint(
                signer,
                iss=ISS,
                sub=SUB,
                aud=AUD,
                op=OP,
                res=RES,
                cnf=certs.caller.thumbprint,
                now=NOW,
                extra={"pad": "x" * pad},
            )
            if len(t) >= size:
                return t
            pad += max(1, (size - len(t)) * 3 // 4)

    big = sized(MAX_TOKEN_BYTES + 1)
    assert len(big) > MAX_TOKEN_BYTES
    err = assert_refused(verifier, big, InvalidToken, **call)
    assert "longer than" in err.detail
    assert lookups == []  # not even the key set was consulted
    garbage = "\u00e9" * (MAX_TOKEN_BYTES + 1)
    assert "longer than" in assert_refused(verifier, garbage, InvalidToken, **call).detail
    assert lookups == []
    # A genuine token at the limit itself is fine.
    pad = 0
    while True:
        t = mint(
            signer,
            iss=ISS,
            sub=SUB,
            aud=AUD,
            op=OP,
            res=RES,
            cnf=certs.caller.thumbprint,
            now=NOW,
            extra={"pad": "x" * pad},
        )
        if len(t) >= MAX_TOKEN_BYTES - 3:
            break
        pad += 1 if len(t) > MAX_TOKEN_BYTES - 40 else 16
    assert MAX_TOKEN_BYTES - 3 <= len(t) <= MAX_TOKEN_BYTES
    verifier.verify(t, **call)


@pytest.mark.parametrize(
    "value",
    [None, 12345, 1.5, ["a.b.c"], {"token": "x"}, bytearray(b"a.b.c"), b"\xff.\xfe.\xfd", "\x00"],
    ids=repr,
)
def test_not_a_token_at_all(verifier: TokenVerifier, call: dict[str, Any], value: Any) -> None:
    assert_refused(verifier, value, InvalidToken, **call)
