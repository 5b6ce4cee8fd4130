"""Fixtures for the token tests: a real key store on disk, real certificates, a verifier."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pki.tokenkeys import TokenKeyStore, TokenSigner
from pki.tokens import ReplayCache, TokenVerifier, mint

from ._support import AUD, ISS, NOW, OP, RES, SUB, CertPair, make_cert_pair


@pytest.fixture(scope="session")
def certs() -> CertPair:
    return make_cert_pair()


@pytest.fixture
def store(tmp_path: Path) -> TokenKeyStore:
    return TokenKeyStore.create(tmp_path / "token-keys", now=NOW - 3600)


@pytest.fixture
def signer(store: TokenKeyStore) -> TokenSigner:
    return store.signer()


@pytest.fixture
def make_verifier(store: TokenKeyStore) -> Callable[..., TokenVerifier]:
    def make(**overrides: Any) -> TokenVerifier:
        options: dict[str, Any] = {
            "audience": AUD,
            "issuers": [ISS],
            "replay": ReplayCache(),
            "clock": lambda: NOW,
        }
        options.update(overrides)
        keys = options.pop("keys", store.keyset())
        return TokenVerifier(keys, **options)

    return make


@pytest.fixture
def verifier(make_verifier: Callable[..., TokenVerifier]) -> TokenVerifier:
    return make_verifier()


@pytest.fixture
def call(certs: CertPair) -> dict[str, Any]:
    """The keyword arguments of a legitimate call by node-1 with its certificate."""
    return {"peer_id": SUB, "peer_thumbprint": certs.caller.thumbprint, "op": OP, "res": RES}


@pytest.fixture
def token(signer: TokenSigner, certs: CertPair) -> str:
    """A genuine token for the legitimate call."""
    return mint(
        signer, iss=ISS, sub=SUB, aud=AUD, op=OP, res=RES, cnf=certs.caller.thumbprint, now=NOW
    )
