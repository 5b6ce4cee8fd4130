"""Strict JOSE building blocks: base64url, JSON, thumbprints.

Everything here refuses rather than repairs. A token or key set that a lenient
decoder would "fix" (padding, standard-base64 characters, duplicate JSON members,
NaN) is a token or key set that two parsers may read differently, so it is refused.
Functions raise ``ValueError`` on bad input; callers map it onto their own error.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any

# Characters of the URL-safe alphabet, no '=' (RFC 7515 §2: padding omitted).
_B64URL = re.compile(rb"[A-Za-z0-9_-]*")
_B64URL_STR = re.compile(r"[A-Za-z0-9_-]*")


def b64url_encode(data: bytes) -> str:
    """Encode without padding (RFC 7515 §2)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(segment: bytes | str) -> bytes:
    """Decode one base64url segment, accepting only its single canonical spelling.

    Refused: characters outside the URL-safe alphabet, padding, a length that no
    encoder produces (len % 4 == 1) and non-zero trailing bits (several spellings
    of the same bytes). Canonicity is checked by re-encoding and comparing.
    """
    raw = segment.encode("ascii") if isinstance(segment, str) else segment
    if _B64URL.fullmatch(raw) is None:
        raise ValueError("not base64url (alphabet or padding)")
    if len(raw) % 4 == 1:
        raise ValueError("impossible base64url length")
    try:
        data = base64.urlsafe_b64decode(raw + b"=" * (-len(raw) % 4))
    except (binascii.Error, ValueError):
        raise ValueError("not base64url") from None
    if base64.urlsafe_b64encode(data).rstrip(b"=") != raw:
        raise ValueError("non-canonical base64url")
    return data


def is_b64url(text: str) -> bool:
    """True when ``text`` uses only the unpadded URL-safe alphabet (no decoding)."""
    return _B64URL_STR.fullmatch(text) is not None


def _refuse_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate JSON member {key!r}")
        out[key] = value
    return out


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"JSON constant {name} is not allowed")


def json_loads_strict(data: bytes | str) -> Any:
    """Parse JSON refusing duplicate members and NaN/Infinity."""
    return json.loads(data, object_pairs_hook=_refuse_duplicates, parse_constant=_refuse_constant)


def json_object_strict(data: bytes | str) -> dict[str, Any]:
    """Parse a JSON document that must be an object."""
    value = json_loads_strict(data)
    if not isinstance(value, dict):
        raise ValueError("JSON document is not an object")
    return value


def canonical_json(value: Mapping[str, object]) -> bytes:
    """Sorted keys, no whitespace, UTF-8, no NaN/Infinity (ValueError on those)."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def sha256_b64url(data: bytes) -> str:
    """base64url (unpadded) SHA-256 of ``data``."""
    return b64url_encode(hashlib.sha256(data).digest())


def thumbprint_of_der(der: bytes) -> str:
    """The RFC 8705 ``x5t#S256`` value: base64url(SHA-256(certificate DER)), unpadded."""
    return sha256_b64url(der)


def okp_thumbprint(x: str) -> bytes:
    """RFC 7638 SHA-256 thumbprint of an Ed25519 OKP public key (raw digest)."""
    # RFC 7638 §3.2 / RFC 8037 §2: required members only, lexicographic order.
    members = json.dumps(
        {"crv": "Ed25519", "kty": "OKP", "x": x}, sort_keys=True, separators=(",", ":")
    )
    return hashlib.sha256(members.encode("ascii")).digest()
