"""Capstan's certificate authority: a root, an intermediate, and the leaves it signs.

A PKI directory holds::

    ca.crt              trust bundle: the root certificate(s) peers trust
    root.crt            this PKI's root certificate
    root.key            root private key (0600); only ``init`` needs it, keep it offline
    intermediate.crt    the CA that signs leaves and CRLs
    intermediate.key    its private key (0600)
    state.json          issued serials and revocations
    token-keys/         Ed25519 token signing keys (pki.tokenkeys)
    .lock               serialises concurrent commands

Identities and SANs of a leaf come only from the caller's arguments, never from a
CSR: a CSR only proves possession of the key it carries.
"""

from __future__ import annotations

import builtins
import contextlib
import datetime
import os
import shutil
import stat
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from pki import _build
from pki.certs import ChainVerifier, load_pem_chain, thumbprint
from pki.errors import CertificateError, ConfigError, PKIError, PKIExistsError, PKIStateError
from pki.files import atomic_write, write_private_key
from pki.identity import (
    IDENTITY_DNS_SUFFIX,
    Identity,
    Kind,
    is_identity_dns_name,
    kind_dns_name,
    parse_ip,
    parse_kind,
    validate_dns_name,
    validate_name,
    validate_role,
    validate_trust_domain,
)
from pki.state import CertRecord, State, load_state, locked, save_state
from pki.tokenkeys import TokenKeyStore

__all__ = [
    "DEFAULT_TTL",
    "MAX_TTL",
    "REVOCATION_REASONS",
    "Authority",
    "CertRecord",
    "Issued",
]

DAY = 86400.0
ROOT_TTL = 3650 * DAY
INTERMEDIATE_TTL = 365 * DAY
CRL_TTL = 7 * DAY
MIN_TTL = 60.0
DEFAULT_TTL: dict[Kind, float] = {
    Kind.ORCHESTRATOR: 1 * DAY,
    Kind.NODE: 1 * DAY,
    Kind.USER: 8 * 3600.0,
}
MAX_TTL: dict[Kind, float] = {
    Kind.ORCHESTRATOR: 30 * DAY,
    Kind.NODE: 30 * DAY,
    Kind.USER: 30 * DAY,
}

REVOCATION_REASONS: dict[str, x509.ReasonFlags] = {
    "unspecified": x509.ReasonFlags.unspecified,
    "key-compromise": x509.ReasonFlags.key_compromise,
    "affiliation-changed": x509.ReasonFlags.affiliation_changed,
    "superseded": x509.ReasonFlags.superseded,
    "cessation-of-operation": x509.ReasonFlags.cessation_of_operation,
    "privilege-withdrawn": x509.ReasonFlags.privilege_withdrawn,
}

TRUST_BUNDLE = "ca.crt"
ROOT_CERT = "root.crt"
ROOT_KEY = "root.key"
INTERMEDIATE_CERT = "intermediate.crt"
INTERMEDIATE_KEY = "intermediate.key"
KEYSTORE_DIR = "token-keys"
STATE = "state.json"
# Files whose presence means "a PKI lives here": init refuses them without force.
_PKI_FILES = (
    STATE,
    TRUST_BUNDLE,
    ROOT_CERT,
    ROOT_KEY,
    INTERMEDIATE_CERT,
    INTERMEDIATE_KEY,
    KEYSTORE_DIR,
)


@dataclass(frozen=True)
class Issued:
    """A freshly signed leaf: the chain to hand out and, unless from a CSR, its key."""

    identity: Identity
    serial: int
    not_after: float
    cert: x509.Certificate
    chain_pem: bytes  # leaf then intermediate: what a TLS peer presents
    key_pem: bytes | None  # None when signed from a CSR: the key never left its owner
    role: str | None = None

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def thumbprint(self) -> str:
        return thumbprint(self.cert)


def _now(now: float | None) -> float:
    return time.time() if now is None else float(now)


def _utc(ts: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(int(ts), tz=datetime.UTC)


def _read_pki_file(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise PKIStateError(f"{what} {path} is missing") from None
    except OSError as exc:
        raise PKIStateError(f"{what} {path} cannot be read: {exc.strerror}") from None


def _load_cert(path: Path, what: str) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(_read_pki_file(path, what))
    except ValueError:
        raise PKIStateError(f"{what} {path} is corrupted: not a PEM certificate") from None


def _load_private_key(path: Path, what: str) -> ec.EllipticCurvePrivateKey:
    data = _read_pki_file(path, what)
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError as exc:
        raise PKIStateError(f"{what} {path} cannot be read: {exc.strerror}") from None
    if mode & 0o077:
        raise PKIStateError(
            f"{what} {path} is readable by group or others (mode {mode:o}); refusing to use it"
        )
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise PKIStateError(f"{what} {path} is corrupted: not an unencrypted PEM key") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise PKIStateError(f"{what} {path} is not an ECDSA P-256 key")
    return key


def _swap_in(directory: Path, staging: Path) -> None:
    """Move the staged PKI into ``directory``, state last; undo every move on failure.

    Renames within one directory are atomic one by one but not as a set: if one
    fails, the previous PKI (when ``--force`` replaces one) is put back as it was.
    """
    old = staging / ".replaced"
    old.mkdir()
    moved_out: list[str] = []
    moved_in: list[str] = []
    try:
        for name in _PKI_FILES:
            if (directory / name).exists():
                os.replace(directory / name, old / name)
                moved_out.append(name)
        for name in (*_PKI_FILES[1:], STATE):
            os.replace(staging / name, directory / name)
            moved_in.append(name)
    except BaseException:
        for name in reversed(moved_in):
            with contextlib.suppress(OSError):
                os.replace(directory / name, staging / name)
        for name in reversed(moved_out):
            with contextlib.suppress(OSError):
                os.replace(old / name, directory / name)
        raise


def _refuse_existing(directory: Path) -> None:
    existing = [n for n in _PKI_FILES if (directory / n).exists()]
    if existing:
        raise PKIExistsError(
            f"a PKI already exists in {directory} ({', '.join(existing)}); "
            "use --force to replace it"
        )


def _check_ttl(kind: Kind, ttl: float | None) -> float:
    if ttl is None:
        return DEFAULT_TTL[kind]
    if ttl < MIN_TTL:
        raise PKIError(f"ttl {ttl:g}s is too short: at least {MIN_TTL:g}s")
    if ttl > MAX_TTL[kind]:
        raise PKIError(
            f"ttl {ttl:g}s is too long for a {kind.value} certificate: at most "
            f"{MAX_TTL[kind] / DAY:g}d"
        )
    return float(ttl)


class Authority:
    """An opened PKI directory; signs leaves with the intermediate."""

    def __init__(
        self,
        directory: Path,
        trust_domain: str,
        intermediate: x509.Certificate,
        intermediate_key: ec.EllipticCurvePrivateKey,
        roots: Sequence[x509.Certificate],
    ) -> None:
        # Use init() or open(); this only wraps material already loaded and checked.
        self.directory = directory
        self.trust_domain = trust_domain
        self.intermediate = intermediate
        self._intermediate_key = intermediate_key
        self._roots = list(roots)

    # -- construction -------------------------------------------------------------

    @classmethod
    def init(
        cls,
        directory: Path,
        trust_domain: str,
        *,
        force: bool = False,
        now: float | None = None,
        root_ttl: float = ROOT_TTL,
        intermediate_ttl: float = INTERMEDIATE_TTL,
    ) -> Authority:
        """Create a PKI in ``directory``; refuse an existing one unless ``force``.

        Everything is written to a staging directory first and moved into place at
        the end, ``state.json`` last: a failure leaves the old state untouched.
        """
        directory = Path(directory)
        validate_trust_domain(trust_domain)
        ts = _now(now)
        if intermediate_ttl > root_ttl:
            raise PKIError("the intermediate cannot outlive the root")
        if directory.exists() and not directory.is_dir():
            raise ConfigError(f"{directory} exists and is not a directory")
        created = not directory.exists()
        if not force:
            # Checked before the lock file exists, so a refusal leaves no trace;
            # checked again under the lock against a concurrent init.
            _refuse_existing(directory)
        try:
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot create PKI directory {directory}: {exc.strerror}") from None
        try:
            with locked(directory):
                if not force:
                    _refuse_existing(directory)
                cls._create(directory, trust_domain, ts, root_ttl, intermediate_ttl)
        except BaseException:
            if created:
                shutil.rmtree(directory, ignore_errors=True)
            raise
        return cls.open(directory)

    @staticmethod
    def _create(
        directory: Path, trust_domain: str, now: float, root_ttl: float, intermediate_ttl: float
    ) -> None:
        root_key = _build.new_key()
        root = _build.build_root(trust_domain, root_key, now=now, ttl=root_ttl)
        inter_key = _build.new_key()
        inter = _build.build_intermediate(
            trust_domain, inter_key, root, root_key, now=now, ttl=intermediate_ttl
        )
        try:
            staging = Path(tempfile.mkdtemp(prefix=".init-", dir=directory))
        except OSError as exc:
            raise ConfigError(f"cannot write in {directory}: {exc.strerror}") from None
        try:
            write_private_key(staging / ROOT_KEY, _build.key_pem(root_key))
            write_private_key(staging / INTERMEDIATE_KEY, _build.key_pem(inter_key))
            atomic_write(staging / ROOT_CERT, _build.cert_pem(root))
            atomic_write(staging / INTERMEDIATE_CERT, _build.cert_pem(inter))
            atomic_write(staging / TRUST_BUNDLE, _build.cert_pem(root))
            TokenKeyStore.create(staging / KEYSTORE_DIR, now=now)
            save_state(staging, State(trust_domain=trust_domain))
            _swap_in(directory, staging)
        except OSError as exc:
            raise ConfigError(f"cannot write the PKI in {directory}: {exc.strerror}") from None
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    @classmethod
    def open(cls, directory: Path) -> Authority:
        """Open an existing PKI; PKIStateError naming the first missing or broken file."""
        directory = Path(directory)
        if not directory.exists():
            raise PKIStateError(f"PKI directory {directory} does not exist")
        if not directory.is_dir():
            raise PKIStateError(f"PKI directory {directory} is not a directory")
        state = load_state(directory)
        inter = _load_cert(directory / INTERMEDIATE_CERT, "intermediate certificate")
        inter_key = _load_private_key(directory / INTERMEDIATE_KEY, "intermediate key")
        if inter.public_key() != inter_key.public_key():
            raise PKIStateError(
                f"intermediate key {directory / INTERMEDIATE_KEY} does not match "
                f"{directory / INTERMEDIATE_CERT}"
            )
        bundle_path = directory / TRUST_BUNDLE
        try:
            roots = load_pem_chain(_read_pki_file(bundle_path, "trust bundle"))
        except CertificateError:
            raise PKIStateError(f"trust bundle {bundle_path} is corrupted") from None
        return cls(directory, state.trust_domain, inter, inter_key, roots)

    # -- queries ------------------------------------------------------------------

    def trust_roots(self) -> list[x509.Certificate]:
        """Every root peers should trust (several while a CA rotation is under way)."""
        return list(self._roots)

    def trust_bundle(self) -> bytes:
        """The trust roots as one PEM bundle (the ``ca.crt`` handed to every peer)."""
        return b"".join(_build.cert_pem(c) for c in self._roots)

    def intermediate_pem(self) -> bytes:
        return _build.cert_pem(self.intermediate)

    def list(self) -> builtins.list[CertRecord]:
        """Every certificate issued, oldest first, with its revocation status."""
        return list(load_state(self.directory).certificates)

    def revoked_serials(self) -> set[int]:
        return {c.serial for c in load_state(self.directory).certificates if c.revoked}

    def verifier(self) -> ChainVerifier:
        """A verifier trusting this PKI's roots and honouring its current revocations."""
        return ChainVerifier(self._roots, self.trust_domain, revoked=self.revoked_serials())

    # -- issuance -----------------------------------------------------------------

    def issue(
        self,
        kind: Kind | str,
        name: str,
        *,
        dns: Sequence[str] = (),
        ips: Sequence[str] = (),
        role: str | None = None,
        ttl: float | None = None,
        now: float | None = None,
    ) -> Issued:
        """Generate a P-256 key and sign a leaf for ``kind/name``."""
        key = _build.new_key()
        issued = self._sign(
            key.public_key(), kind, name, dns=dns, ips=ips, role=role, ttl=ttl, now=now
        )
        return replace(issued, key_pem=_build.key_pem(key))

    def sign_csr(
        self,
        csr_pem: bytes,
        kind: Kind | str,
        name: str,
        *,
        dns: Sequence[str] = (),
        ips: Sequence[str] = (),
        role: str | None = None,
        ttl: float | None = None,
        now: float | None = None,
    ) -> Issued:
        """Sign the CSR's public key for ``kind/name``; the CSR's own names are ignored."""
        try:
            csr = x509.load_pem_x509_csr(csr_pem)
        except ValueError:
            raise CertificateError("CSR is not a readable PEM certificate request") from None
        try:
            valid = csr.is_signature_valid
            public = csr.public_key()
        except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
            raise CertificateError(f"CSR cannot be checked: {exc}") from None
        if not valid:
            raise CertificateError("CSR signature does not verify")
        if not isinstance(public, ec.EllipticCurvePublicKey) or not isinstance(
            public.curve, ec.SECP256R1
        ):
            raise CertificateError(f"CSR key is {type(public).__name__}, not ECDSA P-256")
        return self._sign(public, kind, name, dns=dns, ips=ips, role=role, ttl=ttl, now=now)

    def _sign(
        self,
        public: ec.EllipticCurvePublicKey,
        kind: Kind | str,
        name: str,
        *,
        dns: Sequence[str],
        ips: Sequence[str],
        role: str | None,
        ttl: float | None,
        now: float | None,
    ) -> Issued:
        kind = parse_kind(kind)
        identity = Identity(self.trust_domain, kind, validate_name(name, f"{kind.value} name"))
        if kind is Kind.USER:
            if role is None:
                raise PKIError("a user certificate needs a role (admin, viewer or tenant:NAME)")
            role = validate_role(role)
            if dns or ips:
                raise PKIError("a user certificate carries no DNS or IP SANs (users never serve)")
        elif role is not None:
            raise PKIError(f"a {kind.value} certificate carries no role (only users have roles)")
        requested = [validate_dns_name(d) for d in dns]
        reserved = [d for d in requested if is_identity_dns_name(d)]
        if reserved:
            raise PKIError(
                f"DNS names {reserved} are under the reserved identity suffix "
                f"{IDENTITY_DNS_SUFFIX!r}: the CA sets those itself"
            )
        # A server proves its identity in the handshake through these names: its own,
        # and (orchestrators) the one every orchestrator of the trust domain carries.
        own: list[str] = []
        if kind.is_server:
            own.append(identity.dns_name)
        if kind is Kind.ORCHESTRATOR:
            own.append(kind_dns_name(self.trust_domain, kind))
        dns_names = list(dict.fromkeys([*requested, *own]))
        addresses = list(dict.fromkeys(parse_ip(ip) for ip in ips))
        lifetime = _check_ttl(kind, ttl)
        ts = _now(now)
        if ts + lifetime > self.intermediate.not_valid_after_utc.timestamp():
            raise PKIError(
                "the certificate would outlive the intermediate CA (valid until "
                f"{self.intermediate.not_valid_after_utc.isoformat()}); use a shorter ttl"
            )
        if ts < self.intermediate.not_valid_before_utc.timestamp():
            raise PKIError("the intermediate CA is not valid yet at the given time")
        serial = x509.random_serial_number()
        cert = _build.build_leaf(
            identity,
            public,
            self.intermediate,
            self._intermediate_key,
            dns=dns_names,
            ips=addresses,
            role=role,
            now=ts,
            ttl=lifetime,
            serial=serial,
        )
        record = CertRecord(
            serial=serial,
            kind=kind,
            name=identity.name,
            role=role,
            not_before=cert.not_valid_before_utc.timestamp(),
            not_after=cert.not_valid_after_utc.timestamp(),
            issuer=thumbprint(self.intermediate),
        )
        with locked(self.directory):
            state = load_state(self.directory)
            if state.find(serial) is not None:
                raise PKIError(f"serial {serial:x} collides with an issued certificate; retry")
            state.certificates.append(record)
            save_state(self.directory, state)
        return Issued(
            identity=identity,
            serial=serial,
            not_after=record.not_after,
            cert=cert,
            chain_pem=_build.cert_pem(cert) + self.intermediate_pem(),
            key_pem=None,
            role=role,
        )

    def write_issued(
        self, issued: Issued, outdir: Path, *, overwrite: bool = False
    ) -> builtins.list[Path]:
        """Write OUTDIR/NAME.crt (chain), OUTDIR/NAME.key (0600) and OUTDIR/ca.crt.

        The key is never replaced unless ``overwrite``; if a later file fails, the
        key just written is removed again.
        """
        if issued.key_pem is None:
            raise PKIError("this certificate was signed from a CSR: there is no key to write")
        outdir = Path(outdir)
        if not outdir.is_dir():
            raise ConfigError(f"output directory {outdir} does not exist")
        name = issued.identity.name
        key_path, crt_path = outdir / f"{name}.key", outdir / f"{name}.crt"
        ca_path = outdir / TRUST_BUNDLE
        if key_path.exists() and not overwrite:
            raise PKIExistsError(f"{key_path} already exists; refusing to overwrite it")
        try:
            write_private_key(key_path, issued.key_pem, overwrite=overwrite)
        except OSError as exc:
            raise ConfigError(f"cannot write {key_path}: {exc.strerror}") from None
        try:
            atomic_write(crt_path, issued.chain_pem)
            atomic_write(ca_path, self.trust_bundle())
        except BaseException as exc:
            with contextlib.suppress(OSError):
                key_path.unlink()
            if isinstance(exc, OSError):
                raise ConfigError(f"cannot write into {outdir}: {exc.strerror}") from None
            raise
        return [crt_path, key_path, ca_path]

    # -- revocation ---------------------------------------------------------------

    def revoke(
        self, serial_or_name: int | str, reason: str = "unspecified", *, now: float | None = None
    ) -> builtins.list[int]:
        """Revoke one serial, or every live certificate of a name; return the serials revoked.

        A name may be ``NAME`` or ``KIND/NAME``; a bare name used by several kinds
        is refused as ambiguous. Serials are hex (as ``openssl x509 -serial``
        prints them), with or without ``0x`` and colons.
        """
        if reason not in REVOCATION_REASONS:
            raise PKIError(
                f"unknown revocation reason {reason!r}: expected one of "
                f"{', '.join(REVOCATION_REASONS)}"
            )
        ts = _now(now)
        with locked(self.directory):
            state = load_state(self.directory)
            serials = self._resolve(state, serial_or_name, ts)
            for serial in serials:
                state.mark_revoked(serial, reason=reason, now=ts)
            save_state(self.directory, state)
        return serials

    @staticmethod
    def _resolve(state: State, target: int | str, now: float) -> builtins.list[int]:
        if isinstance(target, int):
            rec = state.find(target)
            if rec is None:
                raise PKIError(f"no certificate with serial {target:x} was issued by this PKI")
            by_serial: CertRecord | None = rec
            by_name: builtins.list[CertRecord] = []
        else:
            text = target.strip()
            by_serial = None
            hexdigits = text.lower().removeprefix("0x").replace(":", "")
            if hexdigits and all(c in "0123456789abcdef" for c in hexdigits):
                by_serial = state.find(int(hexdigits, 16))
            kind: Kind | None = None
            name = text
            if "/" in text:
                kind_text, _, name = text.partition("/")
                kind = parse_kind(kind_text)
            by_name = [
                c for c in state.certificates if c.name == name and (kind is None or c.kind is kind)
            ]
            if by_serial is not None and by_name:
                raise PKIError(f"{text!r} is both a serial and a name; say KIND/{text} for a name")
        if by_serial is not None:
            if by_serial.revoked:
                raise PKIError(f"certificate {by_serial.serial:x} is already revoked")
            return [by_serial.serial]
        if not by_name:
            raise PKIError(f"no certificate with serial or name {target!r} was issued by this PKI")
        kinds = sorted({c.kind.value for c in by_name})
        if len(kinds) > 1:
            raise PKIError(
                f"name {target!r} is used by {' and '.join(kinds)} certificates; "
                f"say {kinds[0]}/{target} or {kinds[1]}/{target}"
            )
        live = [c.serial for c in by_name if not c.revoked and c.not_after > now]
        if not live:
            raise PKIError(f"no unrevoked, unexpired certificate named {target!r}")
        return live

    def crl(self, now: float | None = None, *, ttl: float = CRL_TTL) -> bytes:
        """A PEM CRL, signed by the intermediate, of every revoked leaf it issued."""
        ts = _now(now)
        issuer = thumbprint(self.intermediate)
        with locked(self.directory):
            state = load_state(self.directory)
            state.crl_number += 1
            save_state(self.directory, state)
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(self.intermediate.subject)
            .last_update(_utc(ts))
            .next_update(_utc(ts + ttl))
            .add_extension(x509.CRLNumber(state.crl_number), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(
                    self._intermediate_key.public_key()
                ),
                critical=False,
            )
        )
        for rec in state.certificates:
            if not rec.revoked or rec.issuer != issuer:
                continue
            entry = (
                x509.RevokedCertificateBuilder()
                .serial_number(rec.serial)
                .revocation_date(_utc(rec.revoked_at if rec.revoked_at is not None else ts))
            )
            flag = REVOCATION_REASONS.get(rec.reason or "unspecified", x509.ReasonFlags.unspecified)
            if flag is not x509.ReasonFlags.unspecified:
                # RFC 5280 5.3.1: omit the reason code rather than use unspecified.
                entry = entry.add_extension(x509.CRLReason(flag), critical=False)
            builder = builder.add_revoked_certificate(entry.build())
        crl = builder.sign(self._intermediate_key, hashes.SHA256())
        return crl.public_bytes(serialization.Encoding.PEM)
