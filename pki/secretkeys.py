"""Secrets at rest: key-encryption keys (KEKs) and the envelope around every value.

The store holds only ciphertext. Each secret version gets a fresh 256-bit data key
(DEK) that encrypts the value with AES-256-GCM; the DEK itself is encrypted
("wrapped") with the active KEK, which lives outside the store, in the PKI
directory::

    secret-keys/
      index.json       kids, which one is active, timestamps
      kek-<kid>.key    32 random bytes, 0600, one per non-retired key
      .lock            serialises rotate/retire between processes

A copy of the store therefore learns no value; a copy of the PKI directory without
the store learns none either. The associated data of both encryptions names the
secret (tenant, name, version), so a ciphertext moved to another record in the
store fails to open instead of being served under the wrong name.

``rotate`` makes a new KEK active; records wrapped under the old one are re-wrapped
with ``rewrap`` (the values and DEKs stay as they are) and the old KEK is retired
once nothing uses it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac
import json
import os
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from pki.errors import PKIError, PKIExistsError, PKIStateError
from pki.files import atomic_write, read_file

__all__ = ["Envelope", "SecretKeyStore", "SecretSealError"]

_INDEX = "index.json"
_FORMAT = "capstan-secret-keys/1"
_KEY_BYTES = 32
_NONCE_BYTES = 12
#: Characters of the value's fingerprint that `describe` shows: enough to tell two
#: versions apart, keyed by the DEK so it says nothing to whoever lacks the KEK.
FINGERPRINT_CHARS = 12


class SecretSealError(PKIError):
    """A secret envelope cannot be opened (wrong key, tampered or moved record)."""


@dataclass(frozen=True)
class Envelope:
    """One encrypted secret version, as the store keeps it (no plaintext anywhere)."""

    kek_id: str
    wrapped_dek: bytes  # nonce || AES-GCM(KEK, DEK)
    nonce: bytes
    ciphertext: bytes  # AES-GCM(DEK, value)
    fingerprint: str  # HMAC-SHA256(DEK, value), hex prefix


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    fd = os.open(path / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _aad(label: str) -> bytes:
    return b"capstan-secret/1\x00" + label.encode("utf-8")


class SecretKeyStore:
    """A directory of AES-256 key-encryption keys with one active key."""

    def __init__(self, path: Path, active: str, kids: tuple[str, ...]) -> None:
        # Use create(), open() or open_or_create().
        self.path = Path(path)
        self.active_kid = active
        self.kids = kids
        self._keys: dict[str, bytes] = {}

    @classmethod
    def create(cls, path: Path, *, now: float | None = None) -> SecretKeyStore:
        path = Path(path)
        if (path / _INDEX).exists():
            raise PKIExistsError(f"a secret key store already exists in {path}")
        try:
            path.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise PKIStateError(f"cannot create {path}: {exc.strerror}") from None
        with _locked(path):
            kid = _new_key(path)
            store = cls(path, kid, (kid,))
            store._write_index(now)
        return store

    @classmethod
    def open(cls, path: Path) -> SecretKeyStore:
        path = Path(path)
        try:
            doc = json.loads(read_file(path / _INDEX, "secret key index"))
            if doc.get("format") != _FORMAT:
                raise ValueError(f"unknown format {doc.get('format')!r}")
            kids = tuple(str(k) for k in doc["kids"])
            active = str(doc["active"])
            if active not in kids:
                raise ValueError("the active key is not listed")
        except (ValueError, KeyError, TypeError) as exc:
            raise PKIStateError(f"secret key index in {path} is unusable: {exc}") from None
        return cls(path, active, kids)

    @classmethod
    def open_or_create(cls, path: Path) -> SecretKeyStore:
        """The store at ``path``, created with one key the first time it is needed."""
        if (Path(path) / _INDEX).exists():
            return cls.open(path)
        with contextlib.suppress(PKIExistsError):
            return cls.create(path)
        return cls.open(path)

    def _write_index(self, now: float | None) -> None:
        doc = {
            "format": _FORMAT,
            "active": self.active_kid,
            "kids": list(self.kids),
            "updated": time.time() if now is None else now,
        }
        atomic_write(self.path / _INDEX, json.dumps(doc, indent=1).encode(), mode=0o600)

    def _key(self, kid: str) -> bytes:
        if kid not in self.kids:
            raise SecretSealError(f"key-encryption key {kid!r} is not in {self.path}")
        key = self._keys.get(kid)
        if key is None:
            key = read_file(self.path / f"kek-{kid}.key", "key-encryption key")
            if len(key) != _KEY_BYTES:
                raise PKIStateError(f"key-encryption key {kid} has the wrong length")
            self._keys[kid] = key
        return key

    # -- envelopes ------------------------------------------------------------------

    def seal(self, value: bytes, label: str) -> Envelope:
        """Encrypt ``value`` for the store under a fresh DEK; ``label`` names the record."""
        dek = AESGCM.generate_key(bit_length=256)
        nonce = os.urandom(_NONCE_BYTES)
        ciphertext = AESGCM(dek).encrypt(nonce, value, _aad(label))
        fingerprint = hmac.new(dek, value, hashlib.sha256).hexdigest()[:FINGERPRINT_CHARS]
        return Envelope(self.active_kid, self._wrap(dek, label), nonce, ciphertext, fingerprint)

    def open_envelope(self, envelope: Envelope, label: str) -> bytes:
        """The value of ``envelope``; SecretSealError if any part was changed or moved."""
        dek = self._unwrap(envelope.kek_id, envelope.wrapped_dek, label)
        try:
            return AESGCM(dek).decrypt(envelope.nonce, envelope.ciphertext, _aad(label))
        except (InvalidTag, ValueError):
            raise SecretSealError(f"secret {label} does not open: tampered or moved") from None

    def rewrap(self, envelope: Envelope, label: str) -> Envelope:
        """The same envelope with its DEK wrapped by the active KEK."""
        if envelope.kek_id == self.active_kid:
            return envelope
        dek = self._unwrap(envelope.kek_id, envelope.wrapped_dek, label)
        return Envelope(
            self.active_kid,
            self._wrap(dek, label),
            envelope.nonce,
            envelope.ciphertext,
            envelope.fingerprint,
        )

    def _wrap(self, dek: bytes, label: str) -> bytes:
        nonce = os.urandom(_NONCE_BYTES)
        return nonce + AESGCM(self._key(self.active_kid)).encrypt(nonce, dek, _aad(label))

    def _unwrap(self, kid: str, wrapped: bytes, label: str) -> bytes:
        key = self._key(kid)
        try:
            return AESGCM(key).decrypt(wrapped[:_NONCE_BYTES], wrapped[_NONCE_BYTES:], _aad(label))
        except (InvalidTag, ValueError):
            raise SecretSealError(f"secret {label} does not open: tampered or moved") from None

    # -- rotation -------------------------------------------------------------------

    def rotate(self, *, now: float | None = None) -> str:
        """Make a new KEK active; the old ones stay until retired. Returns the new kid."""
        with _locked(self.path):
            fresh = SecretKeyStore.open(self.path)
            kid = _new_key(self.path)
            self.kids = (*fresh.kids, kid)
            self.active_kid = kid
            self._write_index(now)
        return kid

    def retire(self, kid: str, *, in_use: bool, now: float | None = None) -> None:
        """Delete a KEK that no record uses any more (``in_use`` says whether one does)."""
        if kid == self.active_kid:
            raise PKIError(f"{kid} is the active key-encryption key; rotate first")
        if kid not in self.kids:
            raise PKIError(f"no key-encryption key {kid!r}")
        if in_use:
            raise PKIError(f"key-encryption key {kid} still wraps secrets; rewrap them first")
        with _locked(self.path):
            self.kids = tuple(k for k in self.kids if k != kid)
            self._write_index(now)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path / f"kek-{kid}.key")
            self._keys.pop(kid, None)


def _new_key(path: Path) -> str:
    kid = secrets.token_hex(8)
    atomic_write(path / f"kek-{kid}.key", os.urandom(_KEY_BYTES), mode=0o600, overwrite=False)
    return kid
