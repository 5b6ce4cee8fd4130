"""Formats of the trust material the orchestrator pushes and a node acknowledges.

Deny list: one revoked certificate serial per line, hexadecimal (as ``openssl x509
-serial`` prints it, optional ``0x``); ``#`` starts a comment. The orchestrator
writes it, every node parses it and refuses those serials on every call.

Trust digest: what a node reports to acknowledge the token keys (JWKS) and trust
roots it holds, so the orchestrator knows when a rotation has reached every node.
"""

from __future__ import annotations

import hashlib

from pki.errors import ConfigError


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
