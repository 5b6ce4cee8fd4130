"""Node certificate renewal: a new key and CSR at about 2/3 of the certificate's life,
signed by the orchestrator over the node's authenticated channel (NodeGateway.Renew).

The node uses one certificate as TLS client and server. Renewal replaces two files,
``node.key`` and ``node.crt``, which no rename can swap together, so the order and
the readers are designed together:

1. the new key and certificate are written in full beside the old ones
   (``node.key.new`` 0600, ``node.crt.new``);
2. ``node.key.new`` is renamed over ``node.key``, then ``node.crt.new`` over
   ``node.crt``. The certificate is the commit point: whoever sees the new certificate
   finds its key already in place.
3. every reader (the server's ``TlsFiles``, the Report stream, delegated calls) reads
   the certificate, then the key, and checks that they belong together
   (``read_pair``); between the two renames it may see the old certificate with the
   new key, never the reverse, and then simply reads again.

A crash between the renames leaves ``node.crt.new``; ``recover`` (run at start)
finishes the swap when the pair matches and discards leftovers otherwise.

The replaced pair is kept as ``node.crt.prev``/``node.key.prev`` for a few minutes:
a delegation token is bound to the certificate the orchestrator knew when it minted
it, and a renewal may land between minting and use. ``credentials_for_token`` picks
the pair the token is bound to (its ``cnf``), so such a call still succeeds.

The renewal point is computed from the certificate's own validity: issued at
``notBefore`` plus the backdating every Capstan leaf carries, renewed at a uniformly
jittered point in [2/3 - 5 %, 2/3 + 5 %] of its life, so nodes joined together do not
renew together. A failed renewal is retried with capped backoff.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from pki import lifetime
from pki.certs import identity_of, load_pem_chain, thumbprint
from pki.errors import CapstanError, CertificateError, ConfigError
from pki.files import atomic_write, read_file, write_private_key
from pki.tokens import CNF_MEMBER, decode_unverified
from protos import gateway_pb2, gateway_pb2_grpc
from protos.wire.channel import any_orchestrator, expecting
from protos.wire.errors import status_of
from protos.wire.leader import Endpoints, endpoints_of, leader_of
from protos.wire.trust import trust_digest

log = logging.getLogger("capstan.node.renewal")

__all__ = [
    "RenewalError",
    "Renewer",
    "install",
    "read_pair",
    "recover",
    "renewal_point",
    "trust_digest_of_files",
]

NEW_SUFFIX = ".new"
PREV_SUFFIX = ".prev"
KEEP_PREVIOUS = 300.0  # seconds the replaced pair stays for tokens minted before a renewal


class RenewalError(CapstanError):
    """A renewal failed (the orchestrator refused, or answered with an unusable chain)."""


# -- reading and writing the pair -------------------------------------------------------


def _public_of_key(pem: bytes) -> bytes:
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"node key is not a readable PEM private key: {exc}") from None
    return key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _public_of_chain(pem: bytes) -> bytes:
    try:
        leaf = load_pem_chain(pem, "node certificate")[0]
    except CertificateError as exc:
        raise ConfigError(str(exc)) from None
    return leaf.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def read_pair(
    cert: Path, key: Path, *, attempts: int = 50, pause: float = 0.01
) -> tuple[bytes, bytes]:
    """The certificate chain and key, read in that order and checked to belong together.

    A renewal between the two reads shows the old certificate with the new key; the
    certificate is read again until the pair matches (a few milliseconds at most).
    """
    for attempt in range(attempts):
        chain = read_file(cert, "node certificate")
        pem = read_file(key, "node key")
        if _public_of_chain(chain) == _public_of_key(pem):
            return chain, pem
        if attempt + 1 < attempts:
            time.sleep(pause)
    raise ConfigError(f"node certificate {cert} does not match key {key}")


def _new(path: Path) -> Path:
    return path.with_name(path.name + NEW_SUFFIX)


def _prev(path: Path) -> Path:
    return path.with_name(path.name + PREV_SUFFIX)


def install(
    cert: Path, key: Path, chain_pem: bytes, key_pem: bytes, *, keep_previous: bool = True
) -> None:
    """Replace the node's key and certificate in the order the module docstring gives."""
    if _public_of_chain(chain_pem) != _public_of_key(key_pem):
        raise RenewalError("the renewed certificate is not for the new key")
    try:
        if keep_previous and cert.exists() and key.exists():
            old_chain, old_key = read_pair(cert, key, attempts=1)
            write_private_key(_prev(key), old_key, overwrite=True)
            atomic_write(_prev(cert), old_chain)
        write_private_key(_new(key), key_pem, overwrite=True)
        atomic_write(_new(cert), chain_pem)
        os.replace(_new(key), key)
        os.replace(_new(cert), cert)
    except OSError as exc:
        raise ConfigError(f"cannot install the renewed certificate: {exc.strerror}") from None


def recover(cert: Path, key: Path) -> str:
    """Finish or undo a swap a crash interrupted; returns what was done ("" if nothing)."""
    new_cert, new_key = _new(cert), _new(key)
    done = ""
    if new_cert.exists():
        try:
            wanted = _public_of_chain(new_cert.read_bytes())
            if new_key.exists() and _public_of_key(new_key.read_bytes()) == wanted:
                os.replace(new_key, key)
                os.replace(new_cert, cert)
                done = "installed the renewed key and certificate"
            elif key.exists() and _public_of_key(key.read_bytes()) == wanted:
                os.replace(new_cert, cert)
                done = "installed the renewed certificate"
        except (OSError, CapstanError) as exc:
            log.error("cannot finish an interrupted renewal: %s", exc)
    for leftover in (new_cert, new_key):
        with contextlib.suppress(FileNotFoundError):
            leftover.unlink()
            done = done or "discarded an unfinished renewal"
    if done:
        log.warning("%s (%s)", done, cert)
    return done


def discard_previous(cert: Path, key: Path) -> None:
    """Delete the replaced pair (key first: a certificate alone is public)."""
    for path in (_prev(key), _prev(cert)):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _cnf_of(token: str) -> str:
    # Not verified: it only chooses which of our own certificates to present; the
    # receiving node verifies everything.
    try:
        _, _, claims = decode_unverified(token)
    except CapstanError:
        return ""
    cnf = claims.get("cnf")
    value = cnf.get(CNF_MEMBER) if isinstance(cnf, dict) else None
    return value if isinstance(value, str) else ""


def pair_for_token(cert: Path, key: Path, token: str) -> tuple[bytes, bytes]:
    """The node's own pair to present ``token`` with: the current one, or the previous
    one when the token was minted for it (just before a renewal)."""
    chain, pem = read_pair(cert, key)
    want = _cnf_of(token)
    if want and _thumbprint_of(chain) != want and _prev(cert).exists():
        try:
            old_chain, old_pem = read_pair(_prev(cert), _prev(key), attempts=1)
            if _thumbprint_of(old_chain) == want:
                chain, pem = old_chain, old_pem
        except CapstanError:
            pass
    return chain, pem


def own_credentials(cert: Path, key: Path, ca: Path) -> grpc.ChannelCredentials:
    """The node's current mTLS credentials, read again each time: a renewal may have
    swapped the pair, and ``read_pair`` never returns a mismatched one."""
    chain, pem = read_pair(cert, key)
    return grpc.ssl_channel_credentials(
        root_certificates=read_file(ca, "trust bundle"), private_key=pem, certificate_chain=chain
    )


def gateway_channel(address: str, credentials: grpc.ChannelCredentials, cert: Path) -> grpc.Channel:
    """A channel to the orchestrator's NodeGateway whose handshake accepts only an
    orchestrator of this node's trust domain (read from the node's certificate ``cert``),
    never merely a certificate for the host name: another node's certificate served at
    the orchestrator's address gets no report, task result or renewal request."""
    identity = identity_of(load_pem_chain(read_file(cert, "node certificate"), str(cert))[0])
    return grpc.secure_channel(
        address, credentials, options=expecting(any_orchestrator(identity.trust_domain))
    )


def credentials_for_token(cert: Path, key: Path, ca: Path, token: str) -> grpc.ChannelCredentials:
    """mTLS credentials from ``pair_for_token``."""
    chain, pem = pair_for_token(cert, key, token)
    return grpc.ssl_channel_credentials(
        root_certificates=read_file(ca, "trust bundle"), private_key=pem, certificate_chain=chain
    )


def _thumbprint_of(chain: bytes) -> str:
    try:
        return thumbprint(load_pem_chain(chain, "node certificate")[0])
    except CertificateError:
        return ""


# -- trust acknowledgement ---------------------------------------------------------------


def trust_digest_of_files(jwks: Path, bundle: Path) -> str:
    """``trust_digest`` of the node's files; "" when one cannot be read."""
    try:
        return trust_digest(jwks.read_bytes(), bundle.read_bytes())
    except OSError:
        return ""


# -- when --------------------------------------------------------------------------------


def renewal_point(leaf: x509.Certificate, rng: random.Random) -> float:
    """Unix time at which to renew ``leaf``: a jittered point around 2/3 of its life."""
    return lifetime.renewal_point(
        leaf.not_valid_before_utc.timestamp(), leaf.not_valid_after_utc.timestamp(), rng
    )


@dataclass(frozen=True)
class Renewed:
    serial: int
    not_after: float
    renew_at: float


class Renewer:
    """Renews the node certificate when due or when asked (``renew_now``).

    ``check(now)`` does one step on an injected clock (tests); ``start()`` runs the
    same steps on a thread. ``on_renewed`` runs after a new pair is installed (the
    agent reconnects its Report stream with it).
    """

    def __init__(
        self,
        *,
        cert: Path,
        key: Path,
        ca: Path,
        gateway_address: str | Endpoints,
        on_renewed: Callable[[], None] = lambda: None,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        retry: float = 5.0,
        max_retry: float = 300.0,
        timeout: float = 10.0,
    ) -> None:
        self._cert, self._key, self._ca = Path(cert), Path(key), Path(ca)
        self._endpoints = endpoints_of(gateway_address)
        self._on_renewed = on_renewed
        self._clock = clock
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not a secret
        self._retry, self._max_retry, self._timeout = retry, max_retry, timeout
        self._lock = threading.Lock()  # one renewal at a time
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._asked = False
        self._failures = 0
        self._thread: threading.Thread | None = None
        self._renew_at = self._compute_point()
        self._discard_at: float | None = None
        self.keep_previous = KEEP_PREVIOUS
        self.renewals = 0
        self.last_error = ""

    @property
    def renew_at(self) -> float:
        return self._renew_at

    def _leaf(self) -> x509.Certificate:
        try:
            return load_pem_chain(read_file(self._cert, "node certificate"))[0]
        except CertificateError as exc:
            raise ConfigError(str(exc)) from None

    def _compute_point(self) -> float:
        return renewal_point(self._leaf(), self._rng)

    def renew_now(self) -> None:
        """Renew at the next step (the orchestrator asked: CA rotation, or by hand)."""
        self._asked = True
        self._wake.set()

    def check(self, now: float | None = None) -> Renewed | None:
        """Renew if due or asked; returns what was installed, None when nothing was due.

        Raises RenewalError / ConfigError when a renewal was attempted and failed; the
        next attempt is then scheduled with backoff.
        """
        ts = self._clock() if now is None else now
        if self._discard_at is not None and ts >= self._discard_at:
            discard_previous(self._cert, self._key)
            self._discard_at = None
        if not self._asked and ts < self._renew_at:
            return None
        self._asked = False
        try:
            renewed = self.renew(now=ts)
        except CapstanError as exc:
            self._failures += 1
            delay = min(self._max_retry, self._retry * 2 ** min(self._failures - 1, 16))
            self._renew_at = ts + delay * self._rng.uniform(0.5, 1.0)
            self.last_error = str(exc)
            raise
        self._failures = 0
        self.last_error = ""
        return renewed

    def renew(self, *, now: float | None = None) -> Renewed:
        """One renewal: new key, CSR, Renew over mTLS with the current pair, install."""
        with self._lock:
            current = self._leaf()
            key = ec.generate_private_key(ec.SECP256R1())
            key_pem = key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
            response = self._call(_csr(key))
            try:
                chain = load_pem_chain(response.certificate_chain, "renewed certificate")
                same = identity_of(chain[0]) == identity_of(current)
            except CertificateError as exc:
                raise RenewalError(f"the orchestrator sent an unusable chain: {exc}") from None
            if not same:
                raise RenewalError("the renewed certificate names another identity")
            if response.trust_bundle:
                self._write_bundle(response.trust_bundle)
            install(self._cert, self._key, response.certificate_chain, key_pem)
            self._discard_at = (self._clock() if now is None else now) + self.keep_previous
            self.renewals += 1
            self._renew_at = renewal_point(chain[0], self._rng)
        log.info(
            "renewed node certificate: serial %X valid until %s",
            chain[0].serial_number,
            chain[0].not_valid_after_utc.isoformat(),
        )
        try:
            self._on_renewed()
        except Exception as exc:  # installed already: a failed hook only delays its use
            log.error("after renewal: %s", exc)
        return Renewed(
            chain[0].serial_number, chain[0].not_valid_after_utc.timestamp(), self._renew_at
        )

    def _write_bundle(self, bundle: bytes) -> None:
        try:
            load_pem_chain(bundle, "trust bundle")
            if self._ca.exists() and self._ca.read_bytes() == bundle:
                return
            atomic_write(self._ca, bundle)
        except (OSError, CapstanError) as exc:
            log.error("keeping the current trust bundle: %s", exc)

    def _call(self, csr_pem: bytes) -> gateway_pb2.RenewResponse:
        chain, key = read_pair(self._cert, self._key)
        credentials = grpc.ssl_channel_credentials(
            root_certificates=read_file(self._ca, "trust bundle"),
            private_key=key,
            certificate_chain=chain,
        )
        address = self._endpoints.current()
        channel = gateway_channel(address, credentials, self._cert)
        try:
            response: gateway_pb2.RenewResponse = gateway_pb2_grpc.NodeGatewayStub(channel).Renew(
                gateway_pb2.RenewRequest(csr_pem=csr_pem), timeout=self._timeout
            )
            return response
        except grpc.RpcError as exc:
            self._endpoints.failed(address, leader_of(exc))
            status = status_of(exc)
            raise RenewalError(f"renewal refused: {status.name}: {status.details}") from None
        finally:
            channel.close()

    # -- thread -------------------------------------------------------------------------

    def start(self, *, poll: float = 1.0) -> None:
        if self._thread is not None:
            raise RuntimeError("renewer already started")

        def run() -> None:
            while not self._stop.is_set():
                try:
                    self.check()
                except CapstanError as exc:
                    log.error("certificate renewal failed: %s (retrying)", exc)
                except Exception:  # never end renewal for good
                    log.exception("certificate renewal failed unexpectedly")
                wait = max(0.0, min(poll, self._renew_at - self._clock()))
                self._wake.wait(wait)
                self._wake.clear()

        self._thread = threading.Thread(target=run, name="capstan-renewal", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)


def _csr(key: ec.EllipticCurvePrivateKey) -> bytes:
    # The orchestrator ignores the CSR's names: the CN only helps a human reading it.
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "capstan-node-renewal")])
    csr = x509.CertificateSigningRequestBuilder().subject_name(subject).sign(key, hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.PEM)
