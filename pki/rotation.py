"""CA rotation: a new root and intermediate trusted beside the old ones until no leaf
in use depends on the old.

``rotate_ca`` moves the current root and intermediate to ``previous/``, creates a new
root and intermediate, and writes a trust bundle (``ca.crt``) holding the old roots
and the new one. From then on every leaf is signed by the new intermediate, and every
peer holding the two-root bundle accepts leaves of either chain. When the old root
key is at hand, the new intermediate is also cross-signed by the old root
(``intermediate-cross.crt``): a peer that only ever got the old root (an outside
tool, an operator's old context) can verify a new leaf with the chain
``leaf, intermediate-cross.crt``. Capstan's own peers never need it: the orchestrator
pushes the two-root bundle and waits until every node holds it before any node is
re-issued.

``finish_rotation`` drops the old roots from the bundle, and refuses while a leaf in
use still chains to the old intermediate. "In use" means the newest certificate of
each kind/name pair, unrevoked and unexpired: a node that renewed under the new CA no
longer uses its older certificates, while a user who was never re-issued still does.

Files added to a PKI directory::

    rotation.json          the rotation under way (absent when none)
    previous/              the old root and intermediate (its key signs the old CRL)
    intermediate-cross.crt the new intermediate signed by the old root (optional)
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature

from pki import _build
from pki.authority import (
    INTERMEDIATE_CERT,
    INTERMEDIATE_KEY,
    INTERMEDIATE_TTL,
    ROOT_CERT,
    ROOT_KEY,
    ROOT_TTL,
    TRUST_BUNDLE,
    Authority,
    _load_cert,
    _load_private_key,
)
from pki.certs import load_pem_chain, thumbprint
from pki.errors import CertificateError, ConfigError, PKIError, PKIStateError
from pki.files import atomic_write, write_private_key
from pki.state import CertRecord, load_state, locked

__all__ = [
    "CROSS_CERT",
    "PREVIOUS_DIR",
    "Rotation",
    "RotationInProgress",
    "finish_rotation",
    "in_use_under",
    "previous_authority",
    "rotate_ca",
    "rotation_status",
    "write_crls",
]

ROTATION_FILE = "rotation.json"
PREVIOUS_DIR = "previous"
CROSS_CERT = "intermediate-cross.crt"
CRL_FILE = "crl.pem"
PREVIOUS_CRL_FILE = "crl-previous.pem"


class RotationInProgress(PKIError):
    """A CA rotation is already under way: finish it before starting another."""


@dataclass(frozen=True)
class Rotation:
    """One CA rotation, as recorded in ``rotation.json`` (thumbprints are x5t#S256)."""

    started: float
    old_root: str
    old_intermediate: str
    new_root: str
    new_intermediate: str
    cross_signed: bool

    def to_bytes(self) -> bytes:
        return (json.dumps(asdict(self), indent=2, sort_keys=True) + "\n").encode()


def _load_rotation(directory: Path) -> Rotation | None:
    path = directory / ROTATION_FILE
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise PKIStateError(f"{path} cannot be read: {exc.strerror}") from None
    try:
        doc = json.loads(raw)
        return Rotation(
            started=float(doc["started"]),
            old_root=str(doc["old_root"]),
            old_intermediate=str(doc["old_intermediate"]),
            new_root=str(doc["new_root"]),
            new_intermediate=str(doc["new_intermediate"]),
            cross_signed=bool(doc["cross_signed"]),
        )
    except (ValueError, KeyError, TypeError):
        raise PKIStateError(f"{path} is corrupted") from None


def rotation_status(directory: Path) -> Rotation | None:
    """The rotation under way in ``directory``, or None."""
    return _load_rotation(Path(directory))


def open_settled(directory: Path) -> tuple[bytes, Authority] | None:
    """The trust bundle and the authority of ``directory`` as one consistent reading,
    or None while its files do not agree yet (a rotation or its finish being written
    by another process: come back later).

    Read under the PKI lock that writers hold, and checked: the intermediate that
    signs must be issued by the newest root of the bundle and, during a rotation, be
    the rotation's new intermediate. A reader that took the new bundle with the old
    intermediate would go on signing under the CA being retired."""
    directory = Path(directory)
    with locked(directory):
        bundle = (directory / TRUST_BUNDLE).read_bytes()
        authority = Authority.open(directory)
        rotation = _load_rotation(directory)
    roots = authority.trust_roots()
    try:
        authority.intermediate.verify_directly_issued_by(roots[-1])
    except (ValueError, TypeError, InvalidSignature):
        return None
    if rotation is not None and thumbprint(authority.intermediate) != rotation.new_intermediate:
        return None
    return bundle, authority


def _now(now: float | None) -> float:
    return time.time() if now is None else float(now)


def rotate_ca(
    directory: Path,
    *,
    now: float | None = None,
    root_ttl: float = ROOT_TTL,
    intermediate_ttl: float = INTERMEDIATE_TTL,
) -> Rotation:
    """Create a new root and intermediate; trust old and new roots side by side.

    Refuses while another rotation is under way. Files are replaced in an order that
    keeps the directory usable at every step: the old CA is copied to ``previous/``
    first, then the bundle gains the new root (trusting more is harmless), then the
    new root, and the intermediate last (key, then certificate; ``Authority.open``
    refuses a mismatched pair rather than sign with it).
    """
    directory = Path(directory)
    ts = _now(now)
    authority = Authority.open(directory)  # the PKI must be sound before it is changed
    with locked(directory):
        if _load_rotation(directory) is not None:
            raise RotationInProgress(
                "a CA rotation is already under way; finish it first (capstan pki rotate-ca "
                "--finish)"
            )
        old_root = _load_cert(directory / ROOT_CERT, "root certificate")
        old_root_key = None
        if (directory / ROOT_KEY).exists():
            old_root_key = _load_private_key(directory / ROOT_KEY, "root key")
        old_inter = authority.intermediate
        td = authority.trust_domain

        root_key = _build.new_key()
        root = _build.build_root(td, root_key, now=ts, ttl=root_ttl)
        inter_key = _build.new_key()
        inter = _build.build_intermediate(
            td, inter_key, root, root_key, now=ts, ttl=intermediate_ttl
        )
        cross = None
        if old_root_key is not None:
            # Same subject and key as the new intermediate, issued by the old root.
            cross = _build.build_intermediate(
                td, inter_key, old_root, old_root_key, now=ts, ttl=intermediate_ttl
            )

        previous = directory / PREVIOUS_DIR
        try:
            if previous.exists():
                shutil.rmtree(previous)
            previous.mkdir(mode=0o700)
            atomic_write(previous / ROOT_CERT, _build.cert_pem(old_root))
            atomic_write(previous / INTERMEDIATE_CERT, _build.cert_pem(old_inter))
            shutil.copy2(directory / INTERMEDIATE_KEY, previous / INTERMEDIATE_KEY)
            os.chmod(previous / INTERMEDIATE_KEY, 0o600)
            if old_root_key is not None:
                # The old root key stays with the old root, out of the signing path.
                os.replace(directory / ROOT_KEY, previous / ROOT_KEY)
            bundle = authority.trust_bundle() + _build.cert_pem(root)
            atomic_write(directory / TRUST_BUNDLE, bundle)
            write_private_key(directory / ROOT_KEY, _build.key_pem(root_key), overwrite=True)
            atomic_write(directory / ROOT_CERT, _build.cert_pem(root))
            if cross is not None:
                atomic_write(directory / CROSS_CERT, _build.cert_pem(cross))
            write_private_key(
                directory / INTERMEDIATE_KEY, _build.key_pem(inter_key), overwrite=True
            )
            atomic_write(directory / INTERMEDIATE_CERT, _build.cert_pem(inter))
            rotation = Rotation(
                started=ts,
                old_root=thumbprint(old_root),
                old_intermediate=thumbprint(old_inter),
                new_root=thumbprint(root),
                new_intermediate=thumbprint(inter),
                cross_signed=cross is not None,
            )
            atomic_write(directory / ROTATION_FILE, rotation.to_bytes())
        except OSError as exc:
            raise ConfigError(f"cannot rotate the CA in {directory}: {exc.strerror}") from None
    return rotation


def in_use_under(directory: Path, issuer: str, *, now: float | None = None) -> list[CertRecord]:
    """Leaves in use (newest of their kind/name, unrevoked, unexpired) signed by ``issuer``."""
    ts = _now(now)
    newest: dict[tuple[str, str], CertRecord] = {}
    for rec in load_state(Path(directory)).certificates:
        key = (rec.kind.value, rec.name)
        if key not in newest or rec.not_before >= newest[key].not_before:
            newest[key] = rec
    return [
        rec
        for rec in newest.values()
        if rec.issuer == issuer and not rec.revoked and rec.not_after > ts
    ]


def finish_rotation(directory: Path, *, now: float | None = None, force: bool = False) -> Rotation:
    """Drop the old roots from the trust bundle; refuse while a leaf in use needs them.

    With ``force``, leaves still signed by the old intermediate stop verifying at once.
    """
    directory = Path(directory)
    with locked(directory):
        rotation = _load_rotation(directory)
        if rotation is None:
            raise PKIError("no CA rotation is under way")
        waiting = in_use_under(directory, rotation.old_intermediate, now=now)
        if waiting and not force:
            names = ", ".join(f"{r.kind.value}/{r.name}" for r in waiting[:10])
            more = f" and {len(waiting) - 10} more" if len(waiting) > 10 else ""
            raise PKIError(
                f"{len(waiting)} certificate(s) in use still chain to the old CA: {names}{more}; "
                "re-issue them (nodes renew by themselves) or wait until they expire"
            )
        try:
            roots = load_pem_chain((directory / TRUST_BUNDLE).read_bytes(), "trust bundle")
        except (OSError, CertificateError) as exc:
            raise PKIStateError(f"trust bundle in {directory} cannot be read: {exc}") from None
        kept = [r for r in roots if thumbprint(r) != rotation.old_root]
        if not kept:
            raise PKIStateError("the trust bundle would be empty; refusing")
        try:
            atomic_write(directory / TRUST_BUNDLE, b"".join(_build.cert_pem(r) for r in kept))
            with contextlib.suppress(FileNotFoundError):
                os.unlink(directory / CROSS_CERT)
            shutil.rmtree(directory / PREVIOUS_DIR, ignore_errors=True)
            os.unlink(directory / ROTATION_FILE)
        except OSError as exc:
            raise ConfigError(
                f"cannot finish the rotation in {directory}: {exc.strerror}"
            ) from None
    return rotation


def previous_authority(directory: Path) -> Authority | None:
    """The old intermediate during a rotation (it signs the CRL of the leaves it issued)."""
    directory = Path(directory)
    prev = directory / PREVIOUS_DIR
    if _load_rotation(directory) is None or not (prev / INTERMEDIATE_KEY).exists():
        return None
    current = Authority.open(directory)
    inter = _load_cert(prev / INTERMEDIATE_CERT, "previous intermediate certificate")
    key = _load_private_key(prev / INTERMEDIATE_KEY, "previous intermediate key")
    return Authority(directory, current.trust_domain, inter, key, current.trust_roots())


def write_crls(directory: Path, *, now: float | None = None) -> list[Path]:
    """Regenerate ``crl.pem`` (and, during a rotation, ``crl-previous.pem``) in the PKI dir."""
    directory = Path(directory)
    written: list[Path] = []
    for authority, name in (
        (Authority.open(directory), CRL_FILE),
        (previous_authority(directory), PREVIOUS_CRL_FILE),
    ):
        if authority is None:
            continue
        try:
            atomic_write(directory / name, authority.crl(now))
        except OSError as exc:
            raise ConfigError(f"cannot write {directory / name}: {exc.strerror}") from None
        written.append(directory / name)
    return written
