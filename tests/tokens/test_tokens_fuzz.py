"""Deterministic fuzzing: no input makes verify raise anything but InvalidToken.

Seeded random mutations of genuine tokens (characters, segments, lengths, bytes)
and of their decoded JSON (re-signed with the real key, so the claim checks are
reached). A mutation that happens to rebuild the genuine token is skipped.
"""

from __future__ import annotations

import json
import random
import string
from typing import Any

from pki._jose import b64url_decode, b64url_encode
from pki.errors import InvalidToken, TokenError, TokenNotPermitted
from pki.tokenkeys import TokenSigner
from pki.tokens import TokenVerifier

from ._support import CertPair, claims_for, forge, header_for

ALPHABET = string.ascii_letters + string.digits + "-_.=+/ \n\t\x00\u00e9\u2028"


def _mutate(rng: random.Random, token: str) -> str | bytes:
    choice = rng.randrange(10)
    chars = list(token)
    if choice == 0:  # replace characters
        for _ in range(rng.randint(1, 4)):
            chars[rng.randrange(len(chars))] = rng.choice(ALPHABET)
        return "".join(chars)
    if choice == 1:  # insert characters
        for _ in range(rng.randint(1, 4)):
            chars.insert(rng.randrange(len(chars) + 1), rng.choice(ALPHABET))
        return "".join(chars)
    if choice == 2:  # delete a span
        i = rng.randrange(len(chars))
        del chars[i : i + rng.randint(1, 20)]
        return "".join(chars)
    if choice == 3:  # truncate
        return token[: rng.randrange(len(token))]
    if choice == 4:  # shuffle or duplicate segments
        parts = token.split(".")
        rng.shuffle(parts)
        if rng.random() < 0.5:
            parts.insert(rng.randrange(len(parts) + 1), rng.choice(parts))
        return ".".join(parts)
    if choice == 5:  # random bytes
        return bytes(rng.randrange(256) for _ in range(rng.randint(0, 200)))
    if choice == 6:  # flip bits in the raw bytes
        raw = bytearray(token.encode())
        for _ in range(rng.randint(1, 3)):
            raw[rng.randrange(len(raw))] ^= 1 << rng.randrange(8)
        return bytes(raw)
    if choice == 7:  # swap a segment with one of a different token shape
        parts = token.split(".")
        parts[rng.randrange(3)] = "".join(
            rng.choice(ALPHABET[:64]) for _ in range(rng.randint(0, 90))
        )
        return ".".join(parts)
    if choice == 8:  # case changes
        i = rng.randrange(len(chars))
        chars[i] = chars[i].swapcase()
        return "".join(chars)
    return token * rng.randint(2, 20)  # repetition, often oversize


def test_mutated_tokens_only_ever_raise_invalid_token(
    verifier: TokenVerifier, token: str, call: dict[str, Any]
) -> None:
    rng = random.Random(20261125)
    tried = 0
    for _ in range(4000):
        mutated = _mutate(rng, token)
        if mutated in (token, token.encode()):
            continue
        tried += 1
        try:
            verifier.verify(mutated, **call)
        except InvalidToken:
            continue
        except TokenError as exc:  # pragma: no cover - reported with the input
            raise AssertionError(f"{mutated!r} raised {type(exc).__name__}: {exc}") from None
        raise AssertionError(f"mutated token accepted: {mutated!r}")
    assert tried > 3500
    assert len(verifier.replay) == 0
    verifier.verify(token, **call)  # the genuine token is still unused


def _random_json(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(9 if depth < 3 else 6)
    if kind == 0:
        return None
    if kind == 1:
        return rng.choice([True, False])
    if kind == 2:
        return rng.choice([0, -1, 1, 2**63, 1_800_000_000, 10**30])
    if kind == 3:
        return rng.choice([0.0, 1.5, -0.0, 1e308, 1_800_000_000.0])
    if kind in (4, 5):
        return "".join(rng.choice(ALPHABET) for _ in range(rng.randint(0, 30)))
    if kind == 6:
        return [_random_json(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    return {
        rng.choice(["iss", "sub", "x5t#S256", "k", ""]): _random_json(rng, depth + 1)
        for _ in range(rng.randint(0, 3))
    }


def test_signed_mutated_claims_are_refused_by_the_claim_checks(
    verifier: TokenVerifier, signer: TokenSigner, certs: CertPair, call: dict[str, Any]
) -> None:
    rng = random.Random(7)
    refused = accepted = 0
    genuine = claims_for(certs.caller.thumbprint)
    names = [*genuine, "req", "extra"]
    for n in range(1500):
        claims = dict(genuine, jti=b64url_encode(n.to_bytes(16, "big")))
        for _ in range(rng.randint(1, 3)):
            name = rng.choice(names)
            if rng.random() < 0.2:
                claims.pop(name, None)
            else:
                claims[name] = _random_json(rng)
        token = forge(signer, header_for(signer), json.dumps(claims).encode())
        try:
            verifier.verify(token, **call)
        except (InvalidToken, TokenNotPermitted):
            refused += 1
            continue
        accepted += 1
        # Only a change that kept the binding claims intact may pass ("extra",
        # a later epoch, other times still within the rules).
        decoded = json.loads(b64url_decode(token.split(".")[1]))
        for key in ("iss", "sub", "aud", "op", "res", "cnf"):
            assert decoded[key] == genuine[key], key
        for key in ("iat", "nbf", "exp", "epoch"):
            assert type(decoded[key]) is int and decoded[key] >= 0, key
    assert len(verifier.replay) == accepted
    assert refused > 1000 and accepted > 0  # both branches exercised


def test_random_headers_signed_with_the_real_key(
    verifier: TokenVerifier, signer: TokenSigner, certs: CertPair, call: dict[str, Any]
) -> None:
    rng = random.Random(11)
    for n in range(800):
        header: dict[str, Any] = header_for(signer)
        for _ in range(rng.randint(1, 3)):
            name = rng.choice(["alg", "typ", "kid", "jku", "crit", "x5c", "cty", "b64"])
            if rng.random() < 0.3:
                header.pop(name, None)
            else:
                header[name] = _random_json(rng)
        if header == header_for(signer):
            continue
        token = forge(
            signer,
            header,
            claims_for(certs.caller.thumbprint, jti=b64url_encode(n.to_bytes(16, "big"))),
        )
        try:
            verifier.verify(token, **call)
        except InvalidToken:
            continue
        raise AssertionError(f"header {header!r} accepted")
    assert len(verifier.replay) == 0
