"""The authority's bookkeeping: issued serials and revocations in one JSON file.

The file is replaced atomically on every change, so a reader never sees half of it.
Writers serialise on an flock()ed lock file in the PKI directory and reload the
state after taking the lock: two ``capstan pki`` commands racing on one directory
each see the other's change instead of overwriting it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from pki.errors import CapstanError, PKIStateError
from pki.files import atomic_write
from pki.identity import Kind, parse_kind, validate_trust_domain

STATE_FILE = "state.json"
LOCK_FILE = ".lock"
STATE_VERSION = 1


@dataclass(frozen=True)
class CertRecord:
    """One certificate the authority issued, as listed by ``capstan pki list``."""

    serial: int
    kind: Kind
    name: str
    not_before: float
    not_after: float
    role: str | None = None
    issuer: str = ""  # x5t#S256 of the signing intermediate: tells CRLs apart after rotation
    revoked: bool = False
    revoked_at: float | None = None
    reason: str | None = None

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        # Hex, as openssl prints serials; also keeps 159-bit integers out of JSON numbers.
        data["serial"] = format(self.serial, "x")
        data["kind"] = self.kind.value
        return data


@dataclass
class State:
    trust_domain: str
    crl_number: int = 0
    certificates: list[CertRecord] = field(default_factory=list)

    def to_bytes(self) -> bytes:
        doc = {
            "version": STATE_VERSION,
            "trust_domain": self.trust_domain,
            "crl_number": self.crl_number,
            "certificates": [c.to_json() for c in self.certificates],
        }
        return (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode()

    def find(self, serial: int) -> CertRecord | None:
        for rec in self.certificates:
            if rec.serial == serial:
                return rec
        return None

    def mark_revoked(self, serial: int, *, reason: str, now: float) -> None:
        self.certificates = [
            replace(c, revoked=True, revoked_at=now, reason=reason) if c.serial == serial else c
            for c in self.certificates
        ]


def _corrupt(path: Path, what: str) -> PKIStateError:
    return PKIStateError(f"PKI state file {path} is corrupted: {what}")


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _record(path: Path, index: int, raw: object) -> CertRecord:
    where = f"certificate #{index}"
    if not isinstance(raw, dict):
        raise _corrupt(path, f"{where} is not an object")
    try:
        serial = int(raw["serial"], 16)
        kind = parse_kind(raw["kind"])
        name, role, issuer = raw["name"], raw["role"], raw["issuer"]
        not_before, not_after = raw["not_before"], raw["not_after"]
        revoked, revoked_at, reason = raw["revoked"], raw["revoked_at"], raw["reason"]
    except KeyError as exc:
        raise _corrupt(path, f"{where} lacks {exc.args[0]!r}") from None
    except (TypeError, ValueError, CapstanError):
        raise _corrupt(path, f"{where} has a bad serial or kind") from None
    if not (
        isinstance(name, str)
        and isinstance(issuer, str)
        and (role is None or isinstance(role, str))
        and _number(not_before)
        and _number(not_after)
        and isinstance(revoked, bool)
        and (revoked_at is None or _number(revoked_at))
        and (reason is None or isinstance(reason, str))
    ):
        raise _corrupt(path, f"{where} has a field of the wrong type")
    return CertRecord(
        serial=serial,
        kind=kind,
        name=name,
        not_before=float(not_before),
        not_after=float(not_after),
        role=role,
        issuer=issuer,
        revoked=revoked,
        revoked_at=None if revoked_at is None else float(revoked_at),
        reason=reason,
    )


def load_state(directory: Path) -> State:
    """Read and validate the state file; any defect is one PKIStateError naming the file."""
    path = directory / STATE_FILE
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise PKIStateError(f"PKI state file {path} is missing") from None
    except OSError as exc:
        raise PKIStateError(f"PKI state file {path} cannot be read: {exc.strerror}") from None
    return parse_state(raw, path)


def parse_state(raw: bytes, path: Path) -> State:
    """The state in ``raw`` (the content of ``path``); PKIStateError naming the file."""
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise _corrupt(path, "not valid JSON") from None
    if not isinstance(doc, dict):
        raise _corrupt(path, "not a JSON object")
    if doc.get("version") != STATE_VERSION:
        raise _corrupt(path, f"unsupported version {doc.get('version')!r}")
    trust_domain, crl_number, certs = (
        doc.get("trust_domain"),
        doc.get("crl_number"),
        doc.get("certificates"),
    )
    try:
        validate_trust_domain(trust_domain)  # type: ignore[arg-type]
    except CapstanError:
        raise _corrupt(path, "bad trust_domain") from None
    if not isinstance(crl_number, int) or isinstance(crl_number, bool) or crl_number < 0:
        raise _corrupt(path, "bad crl_number")
    if not isinstance(certs, list):
        raise _corrupt(path, "certificates is not a list")
    records = [_record(path, i, c) for i, c in enumerate(certs)]
    return State(trust_domain=str(trust_domain), crl_number=crl_number, certificates=records)


def save_state(directory: Path, state: State) -> None:
    try:
        atomic_write(directory / STATE_FILE, state.to_bytes(), mode=0o644)
    except OSError as exc:
        raise PKIStateError(
            f"cannot write PKI state file {directory / STATE_FILE}: {exc.strerror}"
        ) from None


@contextlib.contextmanager
def locked(directory: Path) -> Iterator[None]:
    """Hold the PKI directory's exclusive lock (blocking) for the duration of the block."""
    path = directory / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o600)
    except OSError as exc:
        raise PKIStateError(f"cannot open PKI lock file {path}: {exc.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the flock
