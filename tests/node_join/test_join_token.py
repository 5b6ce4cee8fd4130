"""The join token format and the CA pin, without a network."""

from __future__ import annotations

import base64
import hashlib
import random

import pytest
from cryptography.hazmat.primitives import serialization

from node.join import pinned_roots
from node.reconnect import Backoff
from pki.errors import ConfigError
from pki.jointoken import ca_pin, parse_join_token

from .conftest import Pki, new_secret


def test_parse_returns_secret_and_pin(pki: Pki) -> None:
    secret = new_secret()
    assert parse_join_token(f"CJ1.{secret}.{pki.pin}") == (secret, pki.pin)
    # Surrounding whitespace (a token pasted from a file) is tolerated.
    assert parse_join_token(f"  CJ1.{secret}.{pki.pin}\n") == (secret, pki.pin)


def test_pin_is_base64url_sha256_of_the_root_der(pki: Pki) -> None:
    root = pki.authority.trust_roots()[0]
    digest = hashlib.sha256(root.public_bytes(serialization.Encoding.DER)).digest()
    expected = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
    assert ca_pin(root) == expected
    assert len(expected) == 43


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda s, p: f"CJ2.{s}.{p}", "malformed: expected CJ1"),
        (lambda s, p: f"{s}.{p}", "malformed: expected CJ1"),
        (lambda s, p: f"CJ1.{s}.{p}.x", "malformed: expected CJ1"),
        (lambda s, p: f"CJ1.{s}", "malformed: expected CJ1"),
        (lambda s, p: f"CJ1.{s[:-1]}.{p}", "secret is malformed"),
        (lambda s, p: f"CJ1.{s}=.{p}", "secret is malformed"),
        (lambda s, p: f"CJ1.{s[:-1]}+.{p}", "secret is malformed"),  # not base64url
        (lambda s, p: f"CJ1.{s[:-1]}é.{p}", "secret is malformed"),
        (lambda s, p: f"CJ1.{s}.{p[:-1]}", "CA pin is malformed"),
        (lambda s, p: f"CJ1.{s}.{p}A", "CA pin is malformed"),
        (lambda s, p: "", "malformed: expected CJ1"),
    ],
)
def test_malformed_tokens_are_refused_without_echoing_the_secret(
    pki: Pki, make: object, reason: str
) -> None:
    secret = new_secret()
    token = make(secret, pki.pin)  # type: ignore[operator]
    with pytest.raises(ConfigError, match=reason) as info:
        parse_join_token(token)
    assert secret[:20] not in str(info.value)


def test_non_canonical_base64_is_refused(pki: Pki) -> None:
    # 32 bytes leave 2 spare bits in the last character; a decoder ignores them, we do not.
    secret = new_secret()
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    last = alphabet.index(secret[-1])
    twin = secret[:-1] + alphabet[last ^ 1]
    assert base64.urlsafe_b64decode(twin + "=") == base64.urlsafe_b64decode(secret + "=")
    with pytest.raises(ConfigError, match="secret is malformed"):
        parse_join_token(f"CJ1.{twin}.{pki.pin}")


def test_pinned_roots_picks_the_pinned_root_out_of_a_bundle(pki: Pki, evil_pki: Pki) -> None:
    bundle = evil_pki.authority.trust_bundle() + pki.authority.trust_bundle()
    roots = pinned_roots(bundle, pki.pin)
    assert [ca_pin(r) for r in roots] == [pki.pin]


def test_pinned_roots_refuses_a_bundle_without_the_pinned_root(pki: Pki, evil_pki: Pki) -> None:
    with pytest.raises(ConfigError, match="no certificate matching the join token's CA pin"):
        pinned_roots(evil_pki.authority.trust_bundle(), pki.pin)
    with pytest.raises(ConfigError, match="no readable PEM certificate"):
        pinned_roots(b"not a certificate", pki.pin)


def test_backoff_grows_to_its_cap_with_jitter() -> None:
    backoff = Backoff(initial=1.0, maximum=8.0)
    rng = random.Random(7)
    for attempt, base in enumerate((1.0, 2.0, 4.0, 8.0, 8.0, 8.0)):
        for _ in range(50):
            assert base * 0.5 <= backoff.delay(attempt, rng) <= base
    assert backoff.delay(10_000, rng) <= 8.0  # no overflow on a long outage
