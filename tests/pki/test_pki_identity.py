"""Identity, role, name and duration parsing: strict, with precise refusals."""

from __future__ import annotations

import pytest

from pki.duration import format_duration, parse_duration
from pki.errors import CertificateError, ConfigError
from pki.identity import (
    Identity,
    Kind,
    tenant_of,
    validate_dns_name,
    validate_role,
    validate_trust_domain,
)


def test_identity_uri_round_trip() -> None:
    ident = Identity("capstan.test", Kind.NODE, "node-1")
    assert ident.uri == "spiffe://capstan.test/node/node-1"
    assert str(ident) == ident.uri
    assert Identity.parse(ident.uri) == ident
    assert Identity("capstan.test", "user", "alice").kind is Kind.USER  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", list(Kind))
def test_every_kind_parses(kind: Kind) -> None:
    assert Identity.parse(f"spiffe://a.b/{kind.value}/x").kind is kind


@pytest.mark.parametrize(
    ("uri", "reason"),
    [
        ("https://capstan.test/node/n", "not a spiffe identity"),
        ("SPIFFE://capstan.test/node/n", "not a spiffe identity"),
        ("spiffe://capstan.test/node", "expected spiffe://TRUST-DOMAIN/KIND/NAME"),
        ("spiffe://capstan.test/node/n/x", "expected spiffe://TRUST-DOMAIN/KIND/NAME"),
        ("spiffe://capstan.test/node/n/", "expected spiffe://TRUST-DOMAIN/KIND/NAME"),
        ("spiffe://capstan.test/admin/n", "unknown kind 'admin'"),
        ("spiffe://capstan.test/Node/n", "unknown kind 'Node'"),
        ("spiffe://capstan.test/node/N", "invalid node name 'N'"),
        ("spiffe://capstan.test/node/-n", "invalid node name '-n'"),
        ("spiffe://capstan.test/node/n-", "invalid node name 'n-'"),
        ("spiffe://capstan.test/node/..", "invalid node name '..'"),
        ("spiffe://capstan.test/node/n%41", "invalid node name 'n%41'"),
        ("spiffe://capstan.test/node/n?x=1", "invalid node name 'n?x=1'"),
        ("spiffe://capstan.test/node/n#f", "invalid node name 'n#f'"),
        ("spiffe://capstan.test/node/" + "a" * 64, "invalid node name"),
        ("spiffe://capstan.test/node/", "invalid node name ''"),
        ("spiffe://Capstan.test/node/n", "invalid trust domain 'Capstan.test'"),
        ("spiffe://capstan.test:443/node/n", "invalid trust domain"),
        ("spiffe://u@capstan.test/node/n", "invalid trust domain"),
        ("spiffe:///node/n", "invalid trust domain ''"),
        ("spiffe://capstan..test/node/n", "invalid trust domain"),
    ],
)
def test_parse_refuses_off_pattern(uri: str, reason: str) -> None:
    with pytest.raises(CertificateError, match=reason.replace("?", r"\?")):
        Identity.parse(uri)


def test_name_limits() -> None:
    assert Identity("t", Kind.NODE, "a" * 63).name == "a" * 63
    assert Identity("t", Kind.NODE, "0").name == "0"
    with pytest.raises(CertificateError, match=r"invalid trust domain"):
        validate_trust_domain("a" * 64 + ".test")
    with pytest.raises(CertificateError, match=r"invalid trust domain"):
        validate_trust_domain(".".join(["a" * 63] * 5))  # 319 characters


def test_roles() -> None:
    assert validate_role("admin") == "admin"
    assert validate_role("viewer") == "viewer"
    assert validate_role("tenant:acme") == "tenant:acme"
    assert tenant_of("tenant:acme") == "acme"
    assert tenant_of("admin") is None
    for bad in ("root", "Admin", "tenant:", "tenant:Acme", "tenant:a/b", "tenant:acme ", ""):
        with pytest.raises(CertificateError, match=r"invalid"):
            validate_role(bad)


def test_dns_names() -> None:
    assert validate_dns_name("Node-1.Example.org") == "node-1.example.org"
    assert validate_dns_name("localhost") == "localhost"
    for bad in ("*.example.org", "a..b", "-a", "a_b", "a b", "", "é.example"):
        with pytest.raises(CertificateError, match=r"invalid DNS name"):
            validate_dns_name(bad)


@pytest.mark.parametrize(
    ("text", "seconds"), [("90s", 90), ("15m", 900), ("24h", 86400), ("30d", 2592000)]
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds
    assert parse_duration(format_duration(seconds)) == seconds


@pytest.mark.parametrize("text", ["", "10", "0s", "-5m", "1.5h", "1w", "h", "10 s", "01s"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ConfigError, match=r"invalid duration"):
        parse_duration(text)
