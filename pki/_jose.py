"""Strict JOSE building blocks: base64url, JSON, thumbprints.

Everything here refuses rather than repairs. A token or key set that a lenient
decoder would "fix" (padding, standard-base64 characters, duplicate JSON members,
NaN) is a token or key set that two parsers may read differently, so it is refused.
Functions raise ``ValueError`` on bad input; callers map it onto their own error.
"""

from __future__ import annotations

import binascii
import hashlib
import json
import re
from collections.abc import Callable, Mapping
from typing import Any

_B64URL_STR = re.compile(r"[A-Za-z0-9_-]*")
# To the standard alphabet for binascii; '+', '/' and '=' become '!' so that
# binascii's strict mode refuses them (they are not base64url).
_TO_STD = bytes.maketrans(b"-_+/=", b"+/!!!")
_TO_URL = bytes.maketrans(b"+/", b"-_")
# Last character of a canonical encoding, by len % 4: the bits past the data must
# be zero, otherwise several spellings decode to the same bytes.
_CANONICAL_LAST = {
    2: frozenset(b"AQgw"),
    3: frozenset(b"AEIMQUYcgkosw048"),
}


def b64url_encode(data: bytes) -> str:
    """Encode without padding (RFC 7515 §2)."""
    return binascii.b2a_base64(data, newline=False).translate(_TO_URL).rstrip(b"=").decode("ascii")


def b64url_decode(segment: bytes | str) -> bytes:
    """Decode one base64url segment, accepting only its single canonical spelling.

    Refused: characters outside the URL-safe alphabet, padding, a length that no
    encoder produces (len % 4 == 1) and non-zero trailing bits (several spellings
    of the same bytes).
    """
    raw = segment.encode("ascii") if isinstance(segment, str) else segment
    rem = len(raw) % 4
    if rem == 1:
        raise ValueError("impossible base64url length")
    if rem and raw[-1] not in _CANONICAL_LAST[rem]:
        raise ValueError("non-canonical base64url (trailing bits) or not base64url")
    std = raw.translate(_TO_STD)
    if rem:
        std += b"==" if rem == 2 else b"="
    try:
        return binascii.a2b_base64(std, strict_mode=True)
    except (binascii.Error, ValueError):
        raise ValueError("not base64url (alphabet or padding)") from None


def is_b64url(text: str) -> bool:
    """True when ``text`` uses only the unpadded URL-safe alphabet (no decoding)."""
    return _B64URL_STR.fullmatch(text) is not None


def _refuse_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        keys = [k for k, _ in pairs]
        dup = next(k for k in keys if keys.count(k) > 1)
        raise ValueError(f"duplicate JSON member {dup!r}")
    return out


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"JSON constant {name} is not allowed")


# One decoder for all calls: json.loads with hooks builds a new one each time.
_DECODER = json.JSONDecoder(object_pairs_hook=_refuse_duplicates, parse_constant=_refuse_constant)
# The C scanner behind JSONDecoder.decode, minus decode()'s Python wrapper.
_SCAN: Callable[[str, int], tuple[Any, int]] = _DECODER.scan_once  # type: ignore[attr-defined]


def json_loads_strict(data: bytes | str) -> Any:
    """Parse JSON refusing duplicate members, NaN/Infinity and anything but UTF-8.

    Bytes are decoded as UTF-8 here because ``json.loads`` would otherwise guess
    UTF-16/32 from the first bytes: one more way for two parsers to disagree.
    Raises ValueError (UnicodeDecodeError and JSONDecodeError are ValueErrors).
    """
    text = data.decode("utf-8") if isinstance(data, bytes) else data
    return _DECODER.decode(text)


def json_object_strict(data: bytes | str) -> dict[str, Any]:
    """Parse a JSON document that must be an object."""
    value = json_loads_strict(data)
    if not isinstance(value, dict):
        raise ValueError("JSON document is not an object")
    return value


def json_segment_object(data: bytes) -> dict[str, Any]:
    """Parse a token segment's JSON: one object, UTF-8, nothing before or after it.

    Same refusals as json_object_strict, and no surrounding whitespace; calls the
    decoder's scanner directly because this runs on every token verification.
    """
    text = data.decode("utf-8")
    try:
        value, end = _SCAN(text, 0)
    except StopIteration:
        raise ValueError("segment is not JSON") from None
    if end != len(text):
        raise ValueError("data after the JSON object")
    if type(value) is not dict:
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
