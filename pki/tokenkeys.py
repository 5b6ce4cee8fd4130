"""Token signing keys: the orchestrator's Ed25519 keys and the verifiers' key sets.

A ``TokenKeyStore`` is a directory::

    token-keys/
      index.json          kids, public keys (x), state and timestamps
      key-<kid>.pem       PKCS#8 private key, 0600, one per non-retired key
      .lock               serialises rotate/retire between processes

Exactly one key is ``active`` (it signs). ``rotate`` makes a new key active and
turns the old one ``verify-only``: tokens it already signed stay valid while
verifiers still hold it, and verifiers can be given the new public key before the
first token it signs reaches them (publish the JWKS, then rotate... or rotate,
then publish before the old key is retired). ``retire`` removes a verify-only key
from the JWKS and deletes its private key, which is never needed again.

A ``KeySet`` is what a verifier trusts: a fixed allow-list kid -> public key, built
from a JWKS document. Tokens cannot add keys to it (no jku/x5u/jwk).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import stat
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from nacl.signing import VerifyKey

from pki._jose import (
    b64url_decode,
    b64url_encode,
    json_object_strict,
    okp_thumbprint,
)
from pki.errors import ConfigError, PKIError, PKIExistsError, PKIStateError
from pki.files import atomic_write, read_file, write_private_key

__all__ = [
    "KeySet",
    "TokenKeyInfo",
    "TokenKeyStore",
    "TokenSigner",
    "kid_of",
]

KeyState = Literal["active", "verify-only", "retired"]
_STATES: frozenset[str] = frozenset({"active", "verify-only", "retired"})
_INDEX = "index.json"
_FORMAT = "capstan-token-keys/1"
# 128 bits of the RFC 7638 thumbprint: short enough to read, far beyond collisions.
_KID_BYTES = 16
_JWK_MEMBERS = frozenset({"kty", "crv", "x", "kid", "alg", "use", "key_ops"})
_PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})


def _raw_public(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def kid_of(public_key: Ed25519PublicKey) -> str:
    """Deterministic kid: base64url of the first 128 bits of the RFC 7638 thumbprint."""
    return b64url_encode(okp_thumbprint(b64url_encode(_raw_public(public_key)))[:_KID_BYTES])


def _kid_of_x(x: str) -> str:
    return b64url_encode(okp_thumbprint(x)[:_KID_BYTES])


def _jwk(kid: str, x: str) -> dict[str, str]:
    return {"kty": "OKP", "crv": "Ed25519", "x": x, "kid": kid, "alg": "EdDSA", "use": "sig"}


class TokenSigner:
    """The active private key and its kid; what ``tokens.mint`` signs with."""

    __slots__ = ("_key", "kid", "public_key")

    def __init__(self, private_key: Ed25519PrivateKey, kid: str | None = None) -> None:
        self._key = private_key
        self.public_key = private_key.public_key()
        actual = kid_of(self.public_key)
        if kid is not None and kid != actual:
            raise PKIStateError(f"token key kid {kid!r} does not match its key ({actual!r})")
        self.kid: str = actual

    def sign(self, data: bytes) -> bytes:
        """Ed25519 signature over ``data``."""
        return self._key.sign(data)

    def __repr__(self) -> str:
        return f"TokenSigner(kid={self.kid!r})"


class KeySet:
    """An immutable allow-list kid -> Ed25519 public key; the only keys a verifier uses."""

    __slots__ = ("_keys", "_sodium")

    def __init__(self, keys: Mapping[str, Ed25519PublicKey]) -> None:
        checked: dict[str, Ed25519PublicKey] = {}
        for kid, key in keys.items():
            if not isinstance(key, Ed25519PublicKey):
                raise ConfigError(f"key {kid!r} is not an Ed25519 public key")
            if kid_of(key) != kid:
                raise ConfigError(f"kid {kid!r} is not the thumbprint of its key")
            checked[kid] = key
        self._keys: Mapping[str, Ed25519PublicKey] = MappingProxyType(checked)
        # The same keys for libsodium, which verifies about twice as fast as OpenSSL
        # here: verification sits on every authorized call (bench/bench_tokens.py).
        self._sodium: Mapping[str, VerifyKey] = MappingProxyType(
            {kid: VerifyKey(key.public_bytes_raw()) for kid, key in checked.items()}
        )

    @property
    def kids(self) -> tuple[str, ...]:
        """The trusted kids."""
        return tuple(self._keys)

    @classmethod
    def from_jwks(cls, data: bytes | str | Mapping[str, Any]) -> KeySet:
        """Build a key set from a JWKS, strictly.

        Only ``{"keys": [...]}`` with OKP/Ed25519 public keys whose kid is their
        thumbprint; private members, other key types, unknown members, duplicate
        kids or duplicate JSON members are refused with ConfigError.
        """
        if isinstance(data, (bytes, str)):
            try:
                doc: Any = json_object_strict(data)
            except (ValueError, UnicodeDecodeError, RecursionError) as exc:
                raise ConfigError(f"JWKS is not a valid JSON object: {exc}") from None
        else:
            doc = data
        if not isinstance(doc, Mapping):
            raise ConfigError("JWKS must be a JSON object")
        if set(doc) != {"keys"}:
            raise ConfigError('JWKS must hold exactly one member, "keys"')
        entries = doc["keys"]
        if not isinstance(entries, list) or not entries:
            raise ConfigError('JWKS "keys" must be a non-empty list')
        keys: dict[str, Ed25519PublicKey] = {}
        for n, jwk in enumerate(entries):
            kid, key = _parse_public_jwk(jwk, n)
            if kid in keys:
                raise ConfigError(f"JWKS key #{n}: duplicate kid {kid!r}")
            keys[kid] = key
        return cls(keys)

    @classmethod
    def from_file(cls, path: Path) -> KeySet:
        """Read a JWKS file (see ``from_jwks``)."""
        return cls.from_jwks(read_file(path, "JWKS file"))

    def get(self, kid: str) -> Ed25519PublicKey | None:
        """The public key for ``kid``, or None when the kid is not trusted."""
        return self._keys.get(kid)

    def verify_key(self, kid: str) -> VerifyKey | None:
        """The libsodium verifier of ``kid``'s key, or None when the kid is not trusted."""
        return self._sodium.get(kid)

    def __contains__(self, kid: object) -> bool:
        return kid in self._keys

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def jwks(self) -> dict[str, list[dict[str, str]]]:
        """The public JWKS of this key set."""
        return {
            "keys": [_jwk(kid, b64url_encode(_raw_public(key))) for kid, key in self._keys.items()]
        }

    def __repr__(self) -> str:
        return f"KeySet({sorted(self._keys)!r})"


def _parse_public_jwk(jwk: object, n: int) -> tuple[str, Ed25519PublicKey]:
    where = f"JWKS key #{n}"
    if not isinstance(jwk, Mapping):
        raise ConfigError(f"{where} is not a JSON object")
    private = _PRIVATE_MEMBERS.intersection(jwk)
    if private:
        raise ConfigError(
            f"{where} holds private key material ({', '.join(sorted(private))}); "
            "a JWKS given to verifiers must hold public keys only"
        )
    unknown = set(jwk) - _JWK_MEMBERS
    if unknown:
        raise ConfigError(f"{where} has unsupported members: {', '.join(sorted(unknown))}")
    if jwk.get("kty") != "OKP" or jwk.get("crv") != "Ed25519":
        raise ConfigError(f"{where} is not an OKP Ed25519 key (kty/crv)")
    if "alg" in jwk and jwk["alg"] != "EdDSA":
        raise ConfigError(f'{where}: alg must be "EdDSA"')
    if "use" in jwk and jwk["use"] != "sig":
        raise ConfigError(f'{where}: use must be "sig"')
    if "key_ops" in jwk and jwk["key_ops"] != ["verify"]:
        raise ConfigError(f'{where}: key_ops, when present, must be ["verify"]')
    x, kid = jwk.get("x"), jwk.get("kid")
    if not isinstance(x, str) or not isinstance(kid, str):
        raise ConfigError(f"{where}: x and kid must be strings")
    try:
        raw = b64url_decode(x)
    except ValueError as exc:
        raise ConfigError(f"{where}: x is not canonical base64url ({exc})") from None
    if len(raw) != 32:
        raise ConfigError(f"{where}: x is not a 32-byte Ed25519 public key")
    try:
        key = Ed25519PublicKey.from_public_bytes(raw)
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise ConfigError(f"{where}: x is not an Ed25519 public key ({exc})") from None
    if _kid_of_x(x) != kid:
        raise ConfigError(f"{where}: kid {kid!r} is not the thumbprint of x")
    return kid, key


@dataclass(frozen=True)
class TokenKeyInfo:
    """One key of the store as recorded in its index."""

    kid: str
    x: str
    state: KeyState
    created: float
    verify_only_since: float | None = None
    retired: float | None = None


class TokenKeyStore:
    """A directory of Ed25519 token signing keys with one active key."""

    def __init__(self, path: Path, entries: tuple[TokenKeyInfo, ...]) -> None:
        # Use create() or open(); this only wraps an index already validated.
        self.path = Path(path)
        self._entries = entries
        self._signer: TokenSigner | None = None

    # -- construction -------------------------------------------------------------

    @classmethod
    def create(cls, path: Path, *, now: float | None = None) -> TokenKeyStore:
        """Create a store holding one fresh active key; refuse if one exists at ``path``."""
        path = Path(path)
        if (path / _INDEX).exists():
            raise PKIExistsError(f"a token key store already exists in {path}")
        try:
            path.mkdir(mode=0o700, parents=True, exist_ok=True)
            if any(path.iterdir()):
                raise PKIExistsError(f"{path} is not empty; refusing to create a token key store")
        except OSError as exc:
            raise ConfigError(f"cannot create token key directory {path}: {exc.strerror}") from None
        ts = time.time() if now is None else float(now)
        with _locked(path):
            info = _new_key(path, ts)
            store = cls(path, (info,))
            store._write_index(overwrite=False)
        return store

    @classmethod
    def open(cls, path: Path) -> TokenKeyStore:
        """Open an existing store; PKIStateError if it is missing or inconsistent."""
        path = Path(path)
        return cls(path, _read_index(path))

    def reload(self) -> None:
        """Re-read the index: picks up a rotation or retirement made by another process."""
        self._entries = _read_index(self.path)

    # -- queries ------------------------------------------------------------------

    @property
    def entries(self) -> tuple[TokenKeyInfo, ...]:
        """Every key recorded, retired ones included (oldest first)."""
        return self._entries

    @property
    def active_kid(self) -> str:
        """The kid of the key that signs new tokens."""
        return next(e.kid for e in self._entries if e.state == "active")

    def signer(self) -> TokenSigner:
        """A signer holding the active private key (loaded once per store object)."""
        kid = self.active_kid
        if self._signer is None or self._signer.kid != kid:
            self._signer = TokenSigner(self._load_private(kid), kid)
        return self._signer

    def signers(self) -> tuple[TokenSigner, ...]:
        """A signer for every key verifiers trust (active first, then verify-only):
        trust updates are signed by each, so a node still holding only the previous key
        accepts the update that brings it the new one."""
        live = sorted(
            (e for e in self._entries if e.state != "retired"),
            key=lambda e: (e.state != "active", -e.created),
        )
        return tuple(TokenSigner(self._load_private(e.kid), e.kid) for e in live)

    def jwks(self) -> dict[str, list[dict[str, str]]]:
        """Public JWKS of the active and verify-only keys (active first)."""
        live = sorted(
            (e for e in self._entries if e.state != "retired"),
            key=lambda e: (e.state != "active", -e.created),
        )
        return {"keys": [_jwk(e.kid, e.x) for e in live]}

    def keyset(self) -> KeySet:
        """The verifiers' view of this store (active and verify-only keys)."""
        return KeySet.from_jwks(self.jwks())

    # -- changes ------------------------------------------------------------------

    def rotate(self, *, now: float | None = None) -> str:
        """Make a new key active; the previous active key becomes verify-only."""
        ts = time.time() if now is None else float(now)
        with _locked(self.path):
            current = _read_index(self.path)
            info = _new_key(self.path, ts)
            self._entries = (
                *(
                    replace(e, state="verify-only", verify_only_since=ts)
                    if e.state == "active"
                    else e
                    for e in current
                ),
                info,
            )
            self._write_index(overwrite=True)
        return info.kid

    def retire(self, kid: str, *, now: float | None = None) -> None:
        """Stop trusting a verify-only key and delete its private key.

        Refuses the active key (rotate first) and unknown kids; retiring a key
        already retired does nothing.
        """
        ts = time.time() if now is None else float(now)
        with _locked(self.path):
            current = _read_index(self.path)
            match = [e for e in current if e.kid == kid]
            if not match:
                raise PKIError(f"no token key with kid {kid!r} in {self.path}")
            entry = match[0]
            if entry.state == "active":
                raise PKIError(f"token key {kid!r} is the active key; rotate before retiring it")
            if entry.state == "retired":
                self._entries = current
                return
            self._entries = tuple(
                replace(e, state="retired", retired=ts) if e.kid == kid else e for e in current
            )
            # Index first: a crash in between leaves a stray key file, never a
            # trusted key without its record.
            self._write_index(overwrite=True)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(_key_path(self.path, kid))

    # -- internals ----------------------------------------------------------------

    def _write_index(self, *, overwrite: bool) -> None:
        doc = {
            "format": _FORMAT,
            "keys": [
                {
                    "kid": e.kid,
                    "x": e.x,
                    "state": e.state,
                    "created": e.created,
                    "verify_only_since": e.verify_only_since,
                    "retired": e.retired,
                }
                for e in self._entries
            ],
        }
        data = json.dumps(doc, indent=2, sort_keys=True).encode("ascii") + b"\n"
        try:
            atomic_write(self.path / _INDEX, data, mode=0o600, overwrite=overwrite)
        except OSError as exc:
            raise PKIStateError(f"cannot write {self.path / _INDEX}: {exc.strerror}") from None

    def _load_private(self, kid: str) -> Ed25519PrivateKey:
        path = _key_path(self.path, kid)
        try:
            mode = path.stat().st_mode
        except FileNotFoundError:
            raise PKIStateError(f"private key for token key {kid!r} is missing ({path})") from None
        except OSError as exc:
            raise PKIStateError(f"cannot stat {path}: {exc.strerror}") from None
        if stat.S_IMODE(mode) & 0o077:
            raise PKIStateError(
                f"{path} is readable by group or others (mode {stat.S_IMODE(mode):o}); "
                "refusing to use it"
            )
        pem = read_file(path, "token private key")
        try:
            key = serialization.load_pem_private_key(pem, password=None)
        except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
            raise PKIStateError(f"{path} is not a usable private key: {exc}") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise PKIStateError(f"{path} is not an Ed25519 private key")
        return key


def _key_path(directory: Path, kid: str) -> Path:
    return directory / f"key-{kid}.pem"


def _new_key(directory: Path, ts: float) -> TokenKeyInfo:
    key = Ed25519PrivateKey.generate()
    x = b64url_encode(_raw_public(key.public_key()))
    kid = _kid_of_x(x)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    try:
        write_private_key(_key_path(directory, kid), pem)
    except OSError as exc:
        raise PKIStateError(
            f"cannot write token private key in {directory}: {exc.strerror}"
        ) from None
    return TokenKeyInfo(kid=kid, x=x, state="active", created=ts)


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    try:
        fd = os.open(directory / ".lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    except OSError as exc:
        raise PKIStateError(f"cannot lock token key store {directory}: {exc.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _number(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise PKIStateError(f"token key index: {what} is not a number")
    return float(value)


def _read_index(directory: Path) -> tuple[TokenKeyInfo, ...]:
    path = directory / _INDEX
    if not path.exists():
        raise PKIStateError(f"no token key store in {directory} (missing {_INDEX})")
    try:
        doc = json_object_strict(read_file(path, "token key index"))
    except ConfigError as exc:
        raise PKIStateError(str(exc)) from None
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise PKIStateError(f"{path} is not valid JSON: {exc}") from None
    if doc.get("format") != _FORMAT or not isinstance(doc.get("keys"), list):
        raise PKIStateError(f"{path} is not a {_FORMAT} index")
    entries: list[TokenKeyInfo] = []
    for raw in doc["keys"]:
        if not isinstance(raw, dict):
            raise PKIStateError(f"{path}: key entry is not an object")
        kid, x, state = raw.get("kid"), raw.get("x"), raw.get("state")
        if not isinstance(kid, str) or not isinstance(x, str) or state not in _STATES:
            raise PKIStateError(f"{path}: key entry has a bad kid, x or state")
        try:
            valid_x = len(b64url_decode(x)) == 32
        except ValueError:
            valid_x = False
        if not valid_x or _kid_of_x(x) != kid:
            raise PKIStateError(f"{path}: kid {kid!r} does not match its public key")
        vos, ret = raw.get("verify_only_since"), raw.get("retired")
        entries.append(
            TokenKeyInfo(
                kid=kid,
                x=x,
                state=state,
                created=_number(raw.get("created"), "created"),
                verify_only_since=None if vos is None else _number(vos, "verify_only_since"),
                retired=None if ret is None else _number(ret, "retired"),
            )
        )
    if sum(e.state == "active" for e in entries) != 1:
        raise PKIStateError(f"{path}: exactly one token key must be active")
    if len({e.kid for e in entries}) != len(entries):
        raise PKIStateError(f"{path}: duplicate kid")
    for e in entries:
        if e.state != "retired" and not _key_path(directory, e.kid).exists():
            raise PKIStateError(f"{path}: private key for {e.kid!r} is missing")
    return tuple(entries)
