"""Capability tokens: minting (orchestrator) and verification (nodes).

A token is a JWS compact serialisation signed with Ed25519 (DESIGN.md §4)::

    base64url({"alg":"EdDSA","typ":"cap+jwt","kid":KID}) . base64url(claims) . base64url(sig)

The verifier is deliberately narrow: one algorithm it picks itself, one header
shape, keys only from its fixed KeySet, every claim present with its exact JSON
type, every byte in its single canonical spelling. The JWS parsing is written here
rather than delegated to a general-purpose JWT library so that nothing a token
says can widen what the verifier accepts (alg, jku, crit...). docs/tokens.md lists
every check and the gRPC status each failure maps to.
"""

from __future__ import annotations

import functools
import hmac
import json
import math
import os
import re
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from json.encoder import encode_basestring_ascii
from types import MappingProxyType
from typing import Any

from nacl.exceptions import BadSignatureError
from nacl.signing import VerifyKey

from pki._jose import (
    b64url_decode,
    b64url_encode,
    canonical_json,
    json_segment_object,
    sha256_b64url,
    thumbprint_of_der,
)
from pki.errors import (
    ExpiredToken,
    InvalidToken,
    PKIError,
    ReplayedToken,
    StaleEpoch,
    TokenError,
    WrongAudience,
    WrongCaller,
    WrongOperation,
    WrongResource,
)
from pki.replay import ReplayCache
from pki.tokenkeys import KeySet, TokenSigner

__all__ = [
    "MAX_TOKEN_BYTES",
    "TOKEN_TYPE",
    "Capability",
    "ReplayCache",
    "TokenVerifier",
    "check_header",
    "check_signature",
    "decode_unverified",
    "mint",
    "request_digest",
    "thumbprint_of_der",
]

TOKEN_TYPE = "cap+jwt"  # noqa: S105 - a media type, not a secret
MAX_TOKEN_BYTES = 8192
CNF_MEMBER = "x5t#S256"
_HEADER_MEMBERS = frozenset({"alg", "typ", "kid"})
# Named so the refusal says what was attempted; all are refused like any other
# unknown member (the header allow-list is what actually protects).
_DANGEROUS_HEADER = ("jku", "x5u", "jwk", "x5c", "crit", "b64", "zip", "enc")
_STRING_CLAIMS = ("iss", "sub", "aud", "op", "res", "jti")
_INT_CLAIMS = ("iat", "nbf", "exp", "epoch")
_RESERVED_CLAIMS = frozenset((*_STRING_CLAIMS, *_INT_CLAIMS, "req", "cnf"))
_JTI_BYTES = 16
_SIG_B64URL_LEN = 86  # 64 bytes, unpadded


@functools.lru_cache(maxsize=64)
def _header_segment(kid: str) -> bytes:
    header = {"alg": "EdDSA", "typ": TOKEN_TYPE, "kid": kid}
    return b64url_encode(json.dumps(header, separators=(",", ":")).encode("ascii")).encode("ascii")


# Canonical unpadded base64url of 32 bytes: 42 free characters, then one whose two
# low bits are zero. Of 16 bytes (jti): 21, then one whose four low bits are zero.
_DIGEST_RE = re.compile(r"[A-Za-z0-9_-]{42}[AEIMQUYcgkosw048]")
_JTI_RE = re.compile(r"[A-Za-z0-9_-]{21}[AQgw]")
_ENCODER = json.JSONEncoder(separators=(",", ":"), allow_nan=False)
_json_str: Callable[[str], str] = encode_basestring_ascii


def _is_digest(value: object) -> bool:
    """A canonical unpadded base64url SHA-256 value (43 chars, 32 bytes)."""
    return type(value) is str and _DIGEST_RE.fullmatch(value) is not None


_MINT_STRINGS = ("iss", "sub", "aud", "op", "res")
_CLAIMS_FORMAT = (
    '{"iss":%s,"sub":%s,"aud":%s,"op":%s,"res":%s%s,"cnf":{"x5t#S256":"%s"},'
    '"iat":%d,"nbf":%d,"exp":%d,"jti":"%s","epoch":%d}'
)


def _claims_json(
    *,
    iss: str,
    sub: str,
    aud: str,
    op: str,
    res: str,
    req: str | None,
    cnf: str,
    iat: int,
    exp: int,
    jti: str,
    epoch: int,
    extra: Mapping[str, object] | None,
) -> str:
    """The claims as compact JSON through the general encoder (the reference form)."""
    claims: dict[str, object] = {"iss": iss, "sub": sub, "aud": aud, "op": op, "res": res}
    if req is not None:
        claims["req"] = req
    claims.update(
        {"cnf": {CNF_MEMBER: cnf}, "iat": iat, "nbf": iat, "exp": exp, "jti": jti, "epoch": epoch}
    )
    if extra:
        claims.update(extra)
    try:
        return _ENCODER.encode(claims)
    except (TypeError, ValueError) as exc:
        raise _mint_error(f"claims are not JSON-serialisable: {exc}") from None


def _mint_error(detail: str) -> PKIError:
    return PKIError(f"cannot mint token: {detail}")


def mint(
    signer: TokenSigner,
    *,
    iss: str,
    sub: str,
    aud: str,
    op: str,
    res: str,
    cnf: str,
    req: str | None = None,
    ttl: float = 60,
    epoch: int = 0,
    now: float | None = None,
    extra: Mapping[str, object] | None = None,
) -> str:
    """Sign a capability for one call: ``sub`` may do ``op`` on ``res`` at node ``aud``.

    ``cnf`` is the caller certificate's ``x5t#S256`` thumbprint; ``req`` the
    ``request_digest`` of the parameters that matter, when they do. Raises PKIError
    on arguments no verifier would accept (empty strings, bad digests, ttl <= 0).
    """
    strings = (iss, sub, aud, op, res)
    if not all(type(v) is str and v for v in strings):
        bad = next(
            n
            for n, v in zip(_MINT_STRINGS, strings, strict=True)
            if not isinstance(v, str) or not v
        )
        raise _mint_error(f"{bad} must be a non-empty string")
    if not _is_digest(cnf):
        raise _mint_error("cnf must be an unpadded base64url SHA-256 certificate thumbprint")
    if req is not None and not _is_digest(req):
        raise _mint_error("req must be a request_digest() value")
    if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or not 0 < ttl < math.inf:
        raise _mint_error("ttl must be a positive number of seconds")
    if type(epoch) is not int or epoch < 0:
        raise _mint_error("epoch must be a non-negative integer")
    t = time.time() if now is None else now
    iat = int(t)
    exp = max(int(t + ttl), iat + 1)
    jti = b64url_encode(os.urandom(_JTI_BYTES))
    if not extra:
        # The common case, formatted directly: same bytes as the encoder below
        # (a test holds them equal), a third of the cost. Only the free-form
        # strings need escaping; digests and jti are base64url by construction.
        payload = _CLAIMS_FORMAT % (
            _json_str(iss),
            _json_str(sub),
            _json_str(aud),
            _json_str(op),
            _json_str(res),
            "" if req is None else f',"req":"{req}"',
            cnf,
            iat,
            iat,
            exp,
            jti,
            epoch,
        )
    else:
        clash = _RESERVED_CLAIMS.intersection(extra)
        if clash:
            raise _mint_error(f"extra claims may not override {', '.join(sorted(clash))}")
        payload = _claims_json(
            iss=iss,
            sub=sub,
            aud=aud,
            op=op,
            res=res,
            req=req,
            cnf=cnf,
            iat=iat,
            exp=exp,
            jti=jti,
            epoch=epoch,
            extra=extra,
        )
    signing_input = (
        _header_segment(signer.kid) + b"." + b64url_encode(payload.encode("ascii")).encode("ascii")
    )
    signature = signer.sign(signing_input)
    return signing_input.decode("ascii") + "." + b64url_encode(signature)


def _check_digest_fields(value: object, depth: int = 0) -> None:
    if depth > 32:
        raise WrongResource("request fields nest too deeply")
    if value is None or isinstance(value, (bool, int, str)):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise WrongResource("request fields hold a non-finite number")
        return
    if isinstance(value, (list, tuple)):
        for item in value:
            _check_digest_fields(item, depth + 1)
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise WrongResource("request field names must be strings")
            _check_digest_fields(item, depth + 1)
        return
    raise WrongResource(f"request fields hold an unsupported {type(value).__name__}")


def request_digest(fields: Mapping[str, object]) -> str:
    """SHA-256 (unpadded base64url) of the canonical JSON of the request fields that matter.

    Canonical: sorted keys, no whitespace, UTF-8. Values may be None, bool, int,
    finite float, str, lists/tuples and string-keyed mappings of those; anything
    else (NaN, bytes, non-string keys...) raises WrongResource, since such a request
    cannot match a token.
    """
    if not isinstance(fields, Mapping):
        raise WrongResource("request fields must be a mapping")
    _check_digest_fields(fields)
    try:
        return sha256_b64url(canonical_json(fields))
    except (TypeError, ValueError) as exc:  # lone surrogates and the like
        raise WrongResource(f"request fields cannot be canonicalised: {exc}") from None


@dataclass(frozen=True)
class Capability:
    """The verified claims of a token: what the caller may do, once."""

    iss: str
    sub: str
    aud: str
    op: str
    res: str
    req: str | None
    cnf: str
    iat: int
    nbf: int
    exp: int
    jti: str
    epoch: int
    kid: str
    # Claims beyond the standard ones (signed, so trusted; read-only).
    extra: Mapping[str, object] = field(
        default_factory=lambda: _NO_EXTRA, hash=False, compare=False
    )


def _new_capability(values: dict[str, Any]) -> Capability:
    """Capability(**values) without the frozen dataclass __init__.

    That __init__ sets each of the 14 fields through object.__setattr__ and costs
    several microseconds on every verified call; filling __dict__ directly gives the
    same object (Capability has no __post_init__; a test holds the two equal).
    """
    cap = object.__new__(Capability)
    cap.__dict__.update(values)
    return cap


_KNOWN_CLAIMS = len(_RESERVED_CLAIMS)
_NO_EXTRA: Mapping[str, object] = MappingProxyType({})


def _extra_claims(claims: Mapping[str, Any]) -> Mapping[str, object]:
    return MappingProxyType({k: v for k, v in claims.items() if k not in _RESERVED_CLAIMS})


def _explain_claims(claims: Mapping[str, Any]) -> InvalidToken:
    """The precise refusal for claims that failed the combined type test."""
    for name in _STRING_CLAIMS:
        value = claims.get(name)
        if type(value) is not str or not value:
            if name == "aud" and isinstance(value, list):
                # Legal in JWT; a capability names exactly one node.
                return InvalidToken("claim aud must be a single string, not a list")
            return InvalidToken(f"claim {name} is missing or not a non-empty string")
    for name in _INT_CLAIMS:
        value = claims.get(name)
        if type(value) is not int:
            return InvalidToken(f"claim {name} is missing or not an integer")
        if value < 0:
            return InvalidToken(f"claim {name} is negative")
    return InvalidToken("claims are malformed")


def _segments(token: str | bytes) -> tuple[bytes, bytes, bytes, bytes]:
    """The token as ASCII bytes and its three segments; size is checked before anything."""
    if isinstance(token, str):
        if len(token) > MAX_TOKEN_BYTES:
            raise InvalidToken(f"token longer than {MAX_TOKEN_BYTES} bytes")
        try:
            raw = token.encode("ascii")
        except UnicodeEncodeError:
            raise InvalidToken("token holds non-ASCII characters") from None
    elif isinstance(token, bytes):
        if len(token) > MAX_TOKEN_BYTES:
            raise InvalidToken(f"token longer than {MAX_TOKEN_BYTES} bytes")
        raw = token
    else:
        raise InvalidToken(f"token is a {type(token).__name__}, not a string")
    parts = raw.split(b".")
    if len(parts) != 3:
        raise InvalidToken(f"token has {len(parts)} segments, not 3")
    return raw, parts[0], parts[1], parts[2]


def _parse_header(segment: bytes) -> str:
    """Check a header segment against the one accepted shape; return its kid."""
    try:
        header = json_segment_object(b64url_decode(segment))
    except (ValueError, RecursionError) as exc:
        raise InvalidToken(f"malformed header: {exc}") from None
    for name in _DANGEROUS_HEADER:
        if name in header:
            raise InvalidToken(f"header member {name!r} is not accepted")
    unknown = set(header) - _HEADER_MEMBERS
    if unknown:
        raise InvalidToken(f"unexpected header members: {', '.join(sorted(unknown))}")
    # Compared, never used: the algorithm is Ed25519 because the key is.
    if header.get("alg") != "EdDSA":
        raise InvalidToken(f"alg {header.get('alg')!r} is not EdDSA")
    if header.get("typ") != TOKEN_TYPE:
        raise InvalidToken(f"typ {header.get('typ')!r} is not {TOKEN_TYPE}")
    kid = header.get("kid")
    if type(kid) is not str or not kid:
        raise InvalidToken("kid is missing or not a string")
    return kid


def _authenticated_claims(
    key: VerifyKey, kid: str, segments: tuple[bytes, bytes, bytes, bytes]
) -> dict[str, Any]:
    """Verify the Ed25519 signature (libsodium), then (only then) parse the claims object."""
    raw, header_seg, payload_seg, sig_seg = segments
    if len(sig_seg) != _SIG_B64URL_LEN:
        raise InvalidToken("signature has the wrong length")
    try:
        signature = b64url_decode(sig_seg)
    except ValueError as exc:
        raise InvalidToken(f"malformed signature: {exc}") from None
    try:
        # libsodium is the stricter verifier too: it also refuses non-canonical
        # signatures and small-order keys, which OpenSSL accepts.
        key.verify(raw[: len(header_seg) + 1 + len(payload_seg)], signature)
    except BadSignatureError:
        raise InvalidToken(f"bad signature (kid {kid})") from None
    try:
        return json_segment_object(b64url_decode(payload_seg))
    except (ValueError, RecursionError) as exc:
        raise InvalidToken(f"malformed claims: {exc}") from None


def check_header(segment: bytes) -> str:
    """Check an encoded header segment against the one accepted shape; return its kid.

    The verifier's own header check, exposed for inspection tools. Raises InvalidToken.
    """
    return _parse_header(segment)


def decode_unverified(token: str | bytes) -> tuple[bytes, dict[str, Any], dict[str, Any]]:
    """(header segment, header, claims) of a token, strictly decoded but NOT verified.

    For display only (``capstan token inspect``): nothing here is authenticated.
    Raises InvalidToken when the token is not three base64url JSON objects.
    """
    try:
        _, header_seg, payload_seg, _ = _segments(token)
        try:
            header = json_segment_object(b64url_decode(header_seg))
        except (ValueError, RecursionError) as exc:
            raise InvalidToken(f"malformed header: {exc}") from None
        try:
            claims = json_segment_object(b64url_decode(payload_seg))
        except (ValueError, RecursionError) as exc:
            raise InvalidToken(f"malformed claims: {exc}") from None
        return header_seg, header, claims
    except TokenError:
        raise
    except Exception as exc:
        raise InvalidToken(f"unparseable token ({type(exc).__name__})") from None


def check_signature(token: str | bytes, keys: KeySet) -> tuple[str, dict[str, Any]]:
    """Authenticate a token's form, kid and signature only; return (kid, claims).

    For inspection tools: it checks nothing about what the token grants (no
    audience, caller binding, lifetime or replay). Raises InvalidToken.
    """
    try:
        segments = _segments(token)
        kid = _parse_header(segments[1])
        key = keys.verify_key(kid)
        if key is None:
            raise InvalidToken(f"kid {kid!r} is not a trusted token key")
        return kid, _authenticated_claims(key, kid, segments)
    except TokenError:
        raise
    except Exception as exc:
        raise InvalidToken(f"unparseable token ({type(exc).__name__})") from None


class TokenVerifier:
    """Verifies capability tokens for one node (the audience).

    ``keys`` is the trusted KeySet, or a callable returning the current one (so a
    node can hot-reload its JWKS file; the callable should be cheap). ``issuers``
    are the orchestrator identities allowed to mint. ``max_ttl`` bounds exp - iat;
    ``leeway`` tolerates clock skew on nbf/iat/exp.
    """

    def __init__(
        self,
        keys: KeySet | Callable[[], KeySet],
        *,
        audience: str,
        issuers: Collection[str],
        max_ttl: float = 300,
        leeway: float = 5,
        replay: ReplayCache,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not audience or not isinstance(audience, str):
            raise PKIError("token verifier needs a non-empty audience")
        if isinstance(issuers, str):
            # A string is a Collection[str] of its characters: a classic mistake.
            raise PKIError("issuers must be a collection of identities, not one string")
        if not issuers:
            raise PKIError("token verifier needs at least one allowed issuer")
        if not 0 < max_ttl < math.inf or not 0 <= leeway < math.inf:
            raise PKIError("max_ttl must be positive and leeway non-negative")
        self._keys = keys
        self.audience = audience
        self.issuers = frozenset(issuers)
        self.max_ttl = max_ttl
        self.leeway = leeway
        self.replay = replay
        self.clock = clock
        # Header segment -> kid for headers already found valid: they are the same
        # bytes on every token of one key, so parse each once. Small and bounded.
        self._headers: dict[bytes, str] = {}

    def _keyset(self) -> KeySet:
        keys = self._keys
        if isinstance(keys, KeySet):
            return keys
        try:
            current = keys()
        except Exception as exc:
            # A broken JWKS file on the node: refuse (fail closed), say why in the log.
            raise InvalidToken(f"token key set is unavailable: {exc}") from None
        if not isinstance(current, KeySet):
            raise InvalidToken("token key set is unavailable")
        return current

    def verify(
        self,
        token: str | bytes,
        *,
        peer_id: str,
        peer_thumbprint: str,
        op: str,
        res: str,
        req: str | None = None,
        min_epoch: int = 0,
        now: float | None = None,
    ) -> Capability:
        """Check ``token`` for this call and consume it; return its claims.

        ``peer_id``/``peer_thumbprint`` come from the caller's verified mTLS
        certificate; ``op``/``res``/``req`` from the call itself. Raises the
        InvalidToken family (UNAUTHENTICATED) or the TokenNotPermitted family
        (PERMISSION_DENIED); never anything else. The jti is consumed only when
        every other check has passed.
        """
        return self._verify(token, peer_id, peer_thumbprint, op, res, req, min_epoch, now)

    def precheck(
        self,
        token: str | bytes,
        *,
        peer_id: str,
        peer_thumbprint: str,
        op: str,
        min_epoch: int = 0,
        now: float | None = None,
    ) -> Capability:
        """Every check of ``verify`` that needs no request: form, signature, lifetime,
        issuer, audience, caller, operation, epoch, and that the jti is still unused.

        For streams whose resource arrives with the first message: this runs at call
        start, before anything waits for that message; ``verify`` follows on the
        message and consumes the token. Nothing is consumed here.
        """
        cap = self._verify(token, peer_id, peer_thumbprint, op, None, None, min_epoch, now)
        if cap.jti in self.replay:
            raise ReplayedToken(f"jti {cap.jti} was already used")
        return cap

    def _verify(
        self,
        token: str | bytes,
        peer_id: str,
        peer_thumbprint: str,
        op: str,
        res: str | None,
        req: str | None,
        min_epoch: int,
        now: float | None,
    ) -> Capability:
        # res None: a precheck; the resource, request digest and replay wait for verify.
        # One function on purpose: this runs on every RPC, and the checks are
        # cheaper inline than spread over calls (see bench/bench_tokens.py).
        try:
            t = self.clock() if now is None else now
            segments = _segments(token)
            kid = self._header_kid(segments[1])
            key = self._keyset().verify_key(kid)
            if key is None:
                raise InvalidToken(f"kid {kid!r} is not a trusted token key")
            claims = _authenticated_claims(key, kid, segments)
            get = claims.get
            iss, sub, aud, tok_op, tok_res, jti = (
                get("iss"),
                get("sub"),
                get("aud"),
                get("op"),
                get("res"),
                get("jti"),
            )
            iat, nbf, exp, epoch = get("iat"), get("nbf"), get("exp"), get("epoch")
            # One combined test on the hot path; _explain_claims names the culprit.
            # type() rather than isinstance: bool is an int subclass and must be refused.
            if not (
                type(iss) is str and type(sub) is str and type(aud) is str
                and type(tok_op) is str and type(tok_res) is str and type(jti) is str
                and iss and sub and aud and tok_op and tok_res
                and type(iat) is int and type(nbf) is int and type(exp) is int
                and type(epoch) is int and iat >= 0 and nbf >= 0 and exp >= 0 and epoch >= 0
            ):  # fmt: skip
                raise _explain_claims(claims)
            tok_req = get("req")
            if (tok_req is not None or "req" in claims) and not _is_digest(tok_req):
                raise InvalidToken("claim req is not a request digest")
            cnf = get("cnf")
            if type(cnf) is not dict or len(cnf) != 1 or not _is_digest(cnf.get(CNF_MEMBER)):
                raise InvalidToken('claim cnf is not {"x5t#S256": <thumbprint>}')
            cnf_value: str = cnf[CNF_MEMBER]
            if _JTI_RE.fullmatch(jti) is None:
                raise InvalidToken("jti is not 128 bits of base64url")

            if exp <= iat or nbf < iat or nbf >= exp:
                raise InvalidToken("inconsistent iat/nbf/exp")
            if exp - iat > self.max_ttl:
                raise InvalidToken(f"lifetime {exp - iat}s exceeds the maximum {self.max_ttl}s")
            if iat > t + self.leeway or nbf > t + self.leeway:
                raise ExpiredToken("token is not valid yet (nbf/iat in the future)")
            if t >= exp + self.leeway:
                raise ExpiredToken(f"token expired {t - exp:.0f}s ago")
            if iss not in self.issuers:
                raise InvalidToken(f"issuer {iss!r} is not allowed")

            # Authentic and timely; from here on failures are PERMISSION_DENIED.
            if aud != self.audience:
                raise WrongAudience(f"token is for {aud!r}, this node is {self.audience!r}")
            if sub != peer_id:
                raise WrongCaller(f"token is for {sub!r}, caller is {peer_id!r}")
            if not hmac.compare_digest(cnf_value.encode(), str(peer_thumbprint).encode()):
                raise WrongCaller("token is bound to another certificate (cnf)")
            if tok_op != op:
                raise WrongOperation(f"token allows {tok_op!r}, call is {op!r}")
            if res is not None and tok_res != res:
                raise WrongResource(f"token is for resource {tok_res!r}, call is for {res!r}")
            # A token binding parameters the call did not check is refused too: fail closed.
            if (
                res is not None
                and (req is not None or tok_req is not None)
                and (
                    tok_req is None
                    or req is None
                    or not hmac.compare_digest(tok_req.encode(), str(req).encode())
                )
            ):
                raise WrongResource("request parameters do not match the token's req")
            if epoch < min_epoch:
                raise StaleEpoch(f"token epoch {epoch} is older than {min_epoch}")
            # Claims the verifier does not know are kept for the caller (signed, so trusted).
            known = len(claims) == _KNOWN_CLAIMS - (tok_req is None)
            extra = _NO_EXTRA if known else _extra_claims(claims)
            # Last, so that a refused call cannot burn someone else's token.
            if res is not None:
                self.replay.check_and_add(jti, exp + self.leeway, t)
            return _new_capability(
                {
                    "iss": iss,
                    "sub": sub,
                    "aud": aud,
                    "op": tok_op,
                    "res": tok_res,
                    "req": tok_req,
                    "cnf": cnf_value,
                    "iat": iat,
                    "nbf": nbf,
                    "exp": exp,
                    "jti": jti,
                    "epoch": epoch,
                    "kid": kid,
                    "extra": extra,
                }
            )
        except TokenError:
            raise
        except Exception as exc:
            # Whatever slipped past the explicit checks is still a refusal, not a crash.
            raise InvalidToken(f"unparseable token ({type(exc).__name__})") from None

    def _header_kid(self, segment: bytes) -> str:
        cached = self._headers.get(segment)
        if cached is not None:
            return cached
        kid = _parse_header(segment)
        if len(self._headers) >= 64:
            self._headers.clear()
        self._headers[segment] = kid
        return kid
