"""Formats of the trust material the orchestrator pushes and a node acknowledges.

Deny list: one revoked certificate serial per line, hexadecimal (as ``openssl x509
-serial`` prints it, optional ``0x``); ``#`` starts a comment. The orchestrator
writes it, every node parses it and refuses those serials on every call.

Trust digest: what a node reports to acknowledge the token keys (JWKS) and trust
roots it holds, so the orchestrator knows when a rotation has reached every node.

Trust updates are signed: the orchestrator signs ``trust_payload`` with each token
key it holds; a node applies an update only when a signature verifies with a key it
already trusts and the update is not older than the last one it applied
(``check_trust_update``). TLS alone is not enough: whoever answers on the report
stream would otherwise choose the keys every later token is checked against.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from cryptography.exceptions import InvalidSignature

from pki.errors import CapstanError, ConfigError
from pki.tokenkeys import KeySet, TokenSigner
from protos import gateway_pb2

_TRUST_CONTEXT = b"capstan trust update v1\n"


class TrustRefused(CapstanError):
    """A trust update that must not be applied (unsigned, unknown key, older)."""


def parse_deny_list(data: bytes) -> frozenset[int]:
    serials: set[int] = set()
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        raise ConfigError("deny list is not ASCII text") from None
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        digits = line[2:] if line.lower().startswith("0x") else line
        try:
            serial = int(digits.replace(":", ""), 16)
        except ValueError:
            raise ConfigError(
                f"deny list line {lineno}: {line!r} is not a hexadecimal serial"
            ) from None
        serials.add(serial)
    return frozenset(serials)


def format_deny_list(serials: set[int] | frozenset[int]) -> bytes:
    # Never empty: receivers read an empty field as "unchanged", so an empty list
    # must still say something to clear earlier revocations.
    header = f"# capstan deny list: {len(serials)} revoked serial(s)\n"
    return (header + "".join(f"{s:X}\n" for s in sorted(serials))).encode("ascii")


def trust_digest(jwks: bytes, bundle: bytes) -> str:
    """What a node reports to acknowledge the token keys and trust roots it holds."""
    h = hashlib.sha256()
    for part in (jwks, bundle):
        h.update(len(part).to_bytes(8, "big"))
        h.update(part)
    return h.hexdigest()[:32]


def trust_payload(update: gateway_pb2.TrustUpdate) -> bytes:
    """The bytes a trust update's signatures cover: every field but the signatures."""
    h = hashlib.sha256(_TRUST_CONTEXT)
    for part in (update.jwks, update.deny_list, update.trust_bundle):
        h.update(len(part).to_bytes(8, "big"))
        h.update(part)
    h.update(update.epoch.to_bytes(8, "big", signed=True))
    h.update(update.issued_at_ms.to_bytes(8, "big", signed=True))
    return h.digest()


def sign_trust_update(update: gateway_pb2.TrustUpdate, signers: Iterable[TokenSigner]) -> None:
    """Add a signature by each of ``signers`` (replacing any earlier ones)."""
    payload = trust_payload(update)
    del update.signatures[:]
    for signer in signers:
        update.signatures.add(kid=signer.kid, signature=signer.sign(payload))


def check_trust_update(
    update: gateway_pb2.TrustUpdate, keys: KeySet, *, after: tuple[int, int]
) -> tuple[int, int]:
    """Raise TrustRefused unless a signature verifies with one of ``keys`` (those the
    node trusts now) and the update's (epoch, issued_at_ms) is not before ``after``;
    return that order to remember."""
    order = (update.epoch, update.issued_at_ms)
    payload = trust_payload(update)
    known = [s for s in update.signatures if s.kid in keys]
    if not known:
        kids = sorted(s.kid[:16] for s in update.signatures)
        raise TrustRefused(f"trust update signed by no trusted token key (kids {kids})")
    for sig in known:
        key = keys.get(sig.kid)
        if key is None:
            continue
        try:
            key.verify(sig.signature, payload)
        except (InvalidSignature, ValueError):
            continue
        if order < after:
            raise TrustRefused(f"trust update {order} is older than the applied {after}")
        return order
    raise TrustRefused("no signature of the trust update verifies")
