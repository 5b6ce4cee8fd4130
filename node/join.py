"""Joining a cluster: the join token, the CA pin, and the joined node's state directory.

A node joins with a one-time token minted by the orchestrator,
``CJ1.<secret>.<capin>``: ``secret`` is 32 random bytes and ``capin`` the SHA-256 of
the DER of the cluster's root CA certificate, both base64url without padding. The
node refuses to send the secret unless the trust file it was given holds the pinned
root, and then trusts only that root for the join call: the secret never reaches a
server the token's minter did not vouch for.

The node's private key is generated here and never leaves the state directory; the
orchestrator sees a CSR only. A joined state directory holds::

    node.key     P-256 private key (0600)
    node.crt     certificate chain (leaf, then intermediate)
    ca.crt       cluster trust bundle
    jwks.json    token verification keys (rewritten when the orchestrator rolls them)
    deny.txt     revoked serials (likewise)
    node.yaml    configuration for ``capstan node serve --config``
    joined.json  node id, gateway address, issuers, heartbeat interval; written last,
                 so its presence means "joined" and a restart needs no token
"""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
import os
import secrets
import socket
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import grpc
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from node.policy import POLICY_FILE, policy_from_pb
from node.runtime import resolve_runtime
from node.secretfiles import SEAL_KEY_FILE, seal_key_for_join, write_seal_key
from pki.certs import ChainVerifier, identity_of, load_pem_chain, trust_domain_of_root
from pki.errors import CapstanError, CertificateError, ConfigError
from pki.files import atomic_write, read_file, write_private_key
from pki.identity import Identity, Kind, parse_ip, validate_dns_name, validate_name
from pki.jointoken import ca_pin, parse_join_token
from pki.tokenkeys import KeySet
from protos import gateway_pb2, gateway_pb2_grpc
from protos.wire.channel import any_orchestrator, expecting
from protos.wire.errors import status_of
from protos.wire.leader import leader_of
from protos.wire.trust import parse_deny_list

log = logging.getLogger("capstan.node")

__all__ = [
    "JOINED_FILE",
    "MODES",
    "JoinError",
    "JoinOptions",
    "Joined",
    "StateFiles",
    "ensure_joined",
    "join",
    "load_joined",
    "pinned_roots",
    "split_host_port",
]

MODES = ("push", "pull")
JOIN_TIMEOUT = 15.0  # seconds for the whole Join call, connection included
DEFAULT_HEARTBEAT = 5.0
# Bounds on what an orchestrator may ask for: a zero interval would spin the reporter.
MIN_HEARTBEAT, MAX_HEARTBEAT = 0.05, 3600.0
JOINED_FILE = "joined.json"
_WILDCARDS = ("0.0.0.0", "::", "[::]", "")  # noqa: S104 - names, not a bind
_EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_STABLE_PORT_MIN = 10000


class JoinError(CapstanError):
    """The orchestrator refused the join, could not be reached, or answered unusably.

    ``code`` is the gRPC status name when the orchestrator answered (``PERMISSION_DENIED``,
    ``UNAUTHENTICATED``, ``UNAVAILABLE``...), else ``""``.
    """

    def __init__(self, message: str, code: str = "") -> None:
        super().__init__(message)
        self.code = code


# -- token and pin ----------------------------------------------------------------------


def pinned_roots(bundle: bytes, pin: str, what: str = "CA file") -> list[x509.Certificate]:
    """The certificates of ``bundle`` whose pin is ``pin``; ConfigError when there is none."""
    try:
        certs = load_pem_chain(bundle, what)
    except CertificateError as exc:
        raise ConfigError(str(exc)) from None
    matches = [c for c in certs if hmac.compare_digest(ca_pin(c), pin)]
    if not matches:
        raise ConfigError(
            f"{what} holds no certificate matching the join token's CA pin {pin}; "
            "refusing to send the join token"
        )
    return matches


# -- options ----------------------------------------------------------------------------


@dataclass(frozen=True)
class JoinOptions:
    """What the node asks for.

    The ``listen`` host (unless a wildcard) is always among the certificate's
    ``ips``/``dns``; zero ``cpus``/``memory`` are measured on this host;
    ``runtime="auto"`` picks docker when an engine answers, else process.
    """

    name: str = ""
    listen: str = "127.0.0.1:0"
    dns: tuple[str, ...] = ()
    ips: tuple[str, ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict)
    runtime: str = "auto"
    mode: str = "push"
    cpus: float = 0.0
    memory: int = 0


def split_host_port(value: str, what: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ConfigError(f"{what} must be HOST:PORT, got {value!r}")
    return host, int(port)


def _bare(host: str) -> str:
    return host[1:-1] if host.startswith("[") and host.endswith("]") else host


def _is_ip(host: str) -> bool:
    try:
        parse_ip(_bare(host))
    except CertificateError:
        return False
    return True


def _bindable(host: str, port: int) -> bool:
    bare = _bare(host)
    family = socket.AF_INET6 if ":" in bare else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((bare, port))
        except OSError:
            return False
        return True


def _ephemeral_floor() -> int:
    try:
        return int(_EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _free_port(host: str) -> int:
    """A port free on ``host`` now, to be kept across restarts.

    The orchestrator must be told a real port before the server can start (it needs
    the certificate the join returns), so port 0 is resolved here and remembered. The
    port is taken below the kernel's ephemeral range: a port from that range may be
    the source port of some outgoing connection when the node restarts.
    """
    floor = _ephemeral_floor()
    if floor > _STABLE_PORT_MIN:
        for _ in range(64):
            port = _STABLE_PORT_MIN + secrets.randbelow(floor - _STABLE_PORT_MIN)
            if _bindable(host, port):
                return port
    bare = _bare(host)
    family = socket.AF_INET6 if ":" in bare else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.bind((bare, 0))
            return int(sock.getsockname()[1])
    except OSError as exc:
        raise ConfigError(f"cannot listen on {host}: {exc.strerror}") from None


def _host_capacity() -> tuple[float, int]:
    from node.runtime.proc import meminfo_total

    try:
        cpus = float(len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        cpus = float(os.cpu_count() or 1)
    try:
        memory = int(meminfo_total())
    except (OSError, ValueError):
        memory = 0
    return cpus, memory


def _isolation(runtime: str) -> str:
    """What the orchestrator is told of this node's isolation (get nodes -o wide)."""
    if runtime == "docker":
        return "docker"
    from node.runtime._sandbox import unavailable

    return "sandbox" if unavailable() is None else "none"


@dataclass(frozen=True)
class _Plan:
    """Options checked and completed: everything the request and the state files need."""

    name: str
    listen: str
    address: str
    dns: tuple[str, ...]
    ips: tuple[str, ...]
    labels: dict[str, str]
    runtime: str
    mode: str
    cpus: float
    memory: int


def _plan(options: JoinOptions) -> _Plan:
    """Validate options locally, so a typo is reported before the one-time token is spent."""
    try:
        name = validate_name(options.name, "node name") if options.name else ""
        dns = tuple(dict.fromkeys(validate_dns_name(d) for d in options.dns))
        ips = tuple(dict.fromkeys(str(parse_ip(_bare(i))) for i in options.ips))
    except CertificateError as exc:
        raise ConfigError(str(exc)) from None
    if options.mode not in MODES:
        raise ConfigError(f"mode must be push or pull, got {options.mode!r}")
    for key in options.labels:
        if not key:
            raise ConfigError("label keys must not be empty")
    if options.cpus < 0 or options.memory < 0:
        raise ConfigError("cpus and memory must not be negative")
    host, port = split_host_port(options.listen, "listen")
    if _bare(host) in _WILDCARDS:
        advertised = ips[0] if ips else (dns[0] if dns else "")
        if not advertised:
            raise ConfigError(f"listening on {host} needs --ip or --dns: the address to advertise")
        advertised = f"[{advertised}]" if ":" in advertised else advertised
    else:
        advertised = host
        # The orchestrator dials this host and checks it against the node certificate:
        # it is always one of the certificate's names, whatever else was asked for.
        if _is_ip(host):
            ip = str(parse_ip(_bare(host)))
            ips = ips if ip in ips else (ip, *ips)
        else:
            try:
                host_name = validate_dns_name(host)
            except CertificateError as exc:
                raise ConfigError(f"listen host: {exc}") from None
            dns = dns if host_name in dns else (host_name, *dns)
    if port == 0:
        port = _free_port(host)
    cpus, memory = options.cpus, options.memory
    if not cpus or not memory:
        host_cpus, host_memory = _host_capacity()
        cpus, memory = cpus or host_cpus, memory or host_memory
    return _Plan(
        name=name,
        listen=f"{host}:{port}",
        address=f"{advertised}:{port}",
        dns=dns,
        ips=ips,
        labels=dict(options.labels),
        runtime=resolve_runtime(options.runtime),
        mode=options.mode,
        cpus=cpus,
        memory=memory,
    )


# -- state directory --------------------------------------------------------------------


@dataclass(frozen=True)
class StateFiles:
    """Where a joined node keeps its files (see the module docstring)."""

    root: Path

    @property
    def key(self) -> Path:
        return self.root / "node.key"

    @property
    def cert(self) -> Path:
        return self.root / "node.crt"

    @property
    def ca(self) -> Path:
        return self.root / "ca.crt"

    @property
    def jwks(self) -> Path:
        return self.root / "jwks.json"

    @property
    def deny_list(self) -> Path:
        return self.root / "deny.txt"

    @property
    def config(self) -> Path:
        return self.root / "node.yaml"

    @property
    def joined(self) -> Path:
        return self.root / JOINED_FILE


@dataclass(frozen=True)
class Joined:
    """A node's membership, as recorded in ``joined.json``."""

    state_dir: Path
    node_id: str
    name: str
    orchestrator: str  # the Join endpoint used
    gateway_address: str  # the mTLS Report endpoint
    issuers: tuple[str, ...]
    heartbeat_interval: float
    listen: str  # what the agent binds
    address: str  # what the orchestrator was told
    runtime: str
    mode: str
    # Every orchestrator's gateway (several orchestrators on etcd); empty for one.
    gateway_addresses: tuple[str, ...] = ()

    @property
    def files(self) -> StateFiles:
        return StateFiles(self.state_dir)

    def to_json(self) -> bytes:
        doc = asdict(self)
        del doc["state_dir"]
        doc["issuers"] = list(self.issuers)
        doc["gateway_addresses"] = list(self.gateway_addresses)
        return (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode()

    def check_overrides(self, *, listen: str | None = None, runtime: str | None = None) -> None:
        """Refuse flags that contradict what the orchestrator was told at join time.

        The orchestrator dials the address it was given and expects the runtime it was
        told; changing either needs a new join. Port 0 means "the port joined with".
        """
        if listen:
            host, port = split_host_port(listen, "listen")
            joined_host, joined_port = split_host_port(self.listen, "joined listen address")
            if host != joined_host or port not in (0, joined_port):
                raise ConfigError(
                    f"this node joined listening on {self.listen}, not {listen}; "
                    f"join again from an empty state directory to change it"
                )
        if runtime and runtime not in ("auto", self.runtime):
            raise ConfigError(
                f"this node joined with the {self.runtime} runtime, not {runtime}; "
                f"join again from an empty state directory to change it"
            )


_JOINED_FIELDS = {
    "node_id": str,
    "name": str,
    "orchestrator": str,
    "gateway_address": str,
    "issuers": list,
    "heartbeat_interval": float,
    "listen": str,
    "address": str,
    "runtime": str,
    "mode": str,
}


def load_joined(state_dir: Path) -> Joined | None:
    """The membership recorded in ``state_dir``; None when the node never joined there."""
    path = StateFiles(Path(state_dir)).joined
    if not path.exists():
        return None
    try:
        doc: Any = json.loads(read_file(path, "joined node record"))
    except (ValueError, UnicodeDecodeError):
        raise ConfigError(f"joined node record {path} is not valid JSON") from None
    if not isinstance(doc, dict):
        raise ConfigError(f"joined node record {path} is malformed")
    addresses = doc.pop("gateway_addresses", [])  # absent in records of one orchestrator
    if set(doc) != set(_JOINED_FIELDS) or not isinstance(addresses, list):
        raise ConfigError(f"joined node record {path} is malformed")
    if not all(isinstance(a, str) for a in addresses):
        raise ConfigError(f"joined node record {path}: gateway_addresses is malformed")
    doc["gateway_addresses"] = tuple(addresses)
    for key, kind in _JOINED_FIELDS.items():
        value = doc[key]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = doc[key] = float(value)
        if not isinstance(value, kind):
            raise ConfigError(f"joined node record {path}: {key} is malformed")
    if not all(isinstance(i, str) for i in doc["issuers"]):
        raise ConfigError(f"joined node record {path}: issuers is malformed")
    doc["issuers"] = tuple(doc["issuers"])
    return Joined(state_dir=Path(state_dir), **doc)


# -- the join ---------------------------------------------------------------------------


def _node_key(path: Path) -> tuple[ec.EllipticCurvePrivateKey, bool]:
    """The node's key: the one an unfinished join left (never certified, still private),
    else a new one written 0600 before anything is sent. Returns (key, created)."""
    if path.exists():
        data = read_file(path, "node key")
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError):
            raise ConfigError(f"node key {path} is not a readable PEM private key") from None
        if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(
            key.curve, ec.SECP256R1
        ):
            raise ConfigError(f"node key {path} is not an ECDSA P-256 key")
        log.info("reusing the key of an unfinished join: %s", path)
        return key, False
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    try:
        write_private_key(path, pem)
    except OSError as exc:
        raise ConfigError(f"cannot write node key {path}: {exc.strerror}") from None
    return key, True


def _csr(key: ec.EllipticCurvePrivateKey, name: str) -> bytes:
    # The orchestrator ignores the CSR's subject and SANs; the CN only helps a human
    # reading the CSR in a log.
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name or "capstan-node")])
    csr = x509.CertificateSigningRequestBuilder().subject_name(subject).sign(key, hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.PEM)


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _call_join(
    orchestrator: str,
    roots_pem: bytes,
    request: gateway_pb2.JoinRequest,
    timeout: float,
    *,
    trust_domain: str,
    redirected: bool = False,
) -> gateway_pb2.JoinResponse:
    """The Join RPC; a failure becomes JoinError saying what the node should do.

    The handshake accepts only an orchestrator of the pinned CA's trust domain: a
    node's certificate from the same CA, served at the orchestrator's address, never
    sees the one-time token or the CSR. A follower's refusal naming the leader is
    followed once (the same handshake check applies there)."""
    credentials = grpc.ssl_channel_credentials(root_certificates=roots_pem)
    channel = grpc.secure_channel(
        orchestrator, credentials, options=expecting(any_orchestrator(trust_domain))
    )
    try:
        response: gateway_pb2.JoinResponse = gateway_pb2_grpc.NodeGatewayStub(channel).Join(
            request, timeout=timeout
        )
        return response
    except grpc.RpcError as exc:
        leader = leader_of(exc)
        if leader and leader != orchestrator and not redirected:
            log.warning("orchestrator %s is a follower; joining through %s", orchestrator, leader)
            return _call_join(
                leader, roots_pem, request, timeout, trust_domain=trust_domain, redirected=True
            )
        status = status_of(exc)
        code, name, details = status.code, status.name, _one_line(status.details)
        if code in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED):
            message = f"orchestrator {orchestrator} refused the join: {details}"
            raise JoinError(message, name) from None
        if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
            raise JoinError(f"cannot reach orchestrator {orchestrator}: {details}", name) from None
        raise JoinError(f"join at {orchestrator} failed: {name}: {details}", name) from None
    finally:
        channel.close()


def _checked_response(
    response: gateway_pb2.JoinResponse,
    key: ec.EllipticCurvePrivateKey,
    pin: str,
    now: float,
) -> tuple[Identity, tuple[str, ...]]:
    """Refuse an answer the node could not run with, before anything is written: a
    certificate for another key, a chain that does not verify against the returned
    bundle, a bundle without the pinned root, unusable keys, lists or addresses."""
    try:
        bundle = load_pem_chain(response.trust_bundle, "trust bundle")
        if not any(hmac.compare_digest(ca_pin(c), pin) for c in bundle):
            raise JoinError("the trust bundle returned does not hold the pinned root")
        chain = load_pem_chain(response.certificate_chain, "certificate chain")
        if chain[0].public_key() != key.public_key():
            raise JoinError("the certificate returned is not for this node's key")
        verifier = ChainVerifier(bundle, identity_of(chain[0]).trust_domain)
        identity = verifier.verify(chain[0], chain[1:], purpose="server", now=now)
        if identity.kind is not Kind.NODE:
            raise JoinError(f"the certificate returned is for {identity.uri}, not a node")
        if response.node_id and response.node_id != identity.uri:
            raise JoinError(
                f"the orchestrator named the node {response.node_id} but certified {identity.uri}"
            )
        issuers = tuple(response.issuers)
        if not issuers:
            raise JoinError("the orchestrator named no issuer of capability tokens")
        for issuer in issuers:
            if Identity.parse(issuer).kind is not Kind.ORCHESTRATOR:
                raise JoinError(f"token issuer {issuer} is not an orchestrator identity")
        KeySet.from_jwks(response.jwks)
        parse_deny_list(response.deny_list)
        split_host_port(response.gateway_address, "gateway address")
        for address in response.gateway_addresses:
            split_host_port(address, "gateway address")
    except JoinError:
        raise
    except CapstanError as exc:
        raise JoinError(f"the orchestrator's join answer is unusable: {exc}") from None
    return identity, issuers


def _heartbeat(value: float) -> float:
    if value <= 0:
        return DEFAULT_HEARTBEAT
    return min(max(value, MIN_HEARTBEAT), MAX_HEARTBEAT)


def _node_config(files: StateFiles, plan: _Plan, issuers: Sequence[str]) -> bytes:
    doc = {
        "listen": plan.listen,
        "cert": str(files.cert),
        "key": str(files.key),
        "ca": str(files.ca),
        "jwks": str(files.jwks),
        "deny-list": str(files.deny_list),
        "state-dir": str(files.root),
        "runtime": plan.runtime,
        "issuers": list(issuers),
        "labels": dict(plan.labels),
    }
    return yaml.safe_dump(doc, sort_keys=False).encode()


def join(
    state_dir: Path,
    orchestrator: str,
    token: str,
    ca_file: Path,
    options: JoinOptions = JoinOptions(),
    *,
    timeout: float = JOIN_TIMEOUT,
    now: float | None = None,
) -> Joined:
    """Join the cluster at ``orchestrator`` (the Join endpoint) and record the result.

    Nothing is sent unless ``ca_file`` holds the root pinned by ``token``; nothing is
    left behind when the join fails (a key this call created is removed: it was never
    certified). Raises ConfigError for local problems, JoinError for the orchestrator's.
    """
    state_dir = Path(state_dir).absolute()
    files = StateFiles(state_dir)
    if files.joined.exists():
        raise ConfigError(f"{state_dir} already holds a joined node; it restarts without a token")
    split_host_port(orchestrator, "orchestrator address")
    _secret, pin = parse_join_token(token)
    roots = pinned_roots(read_file(ca_file, "CA file"), pin, f"CA file {ca_file}")
    plan = _plan(options)
    created_dir = not state_dir.exists()
    try:
        state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create state directory {state_dir}: {exc.strerror}") from None
    created_key = wrote_seal = False
    try:
        key, created_key = _node_key(files.key)
        seal, new_seal = seal_key_for_join(state_dir)
        request = gateway_pb2.JoinRequest(
            join_token=token.strip(),
            csr_pem=_csr(key, plan.name),
            name=plan.name,
            dns=list(plan.dns),
            ips=list(plan.ips),
            address=plan.address,
            cpus=plan.cpus,
            memory=plan.memory,
            labels=plan.labels,
            runtime=plan.runtime,
            mode=plan.mode,
            isolation=_isolation(plan.runtime),
            # The key secrets are sealed to; its private half stays in the state dir.
            seal_key=bytes(seal.public_key),
        )
        roots_pem = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in roots)
        trust_domains = {trust_domain_of_root(c) for c in roots}
        if len(trust_domains) != 1:
            raise ConfigError("the pinned CA names no single trust domain")
        response = _call_join(
            orchestrator, roots_pem, request, timeout, trust_domain=trust_domains.pop()
        )
        identity, issuers = _checked_response(
            response, key, pin, time.time() if now is None else now
        )
        joined = Joined(
            state_dir=state_dir,
            node_id=identity.uri,
            name=identity.name,
            orchestrator=orchestrator,
            gateway_address=response.gateway_address,
            issuers=issuers,
            heartbeat_interval=_heartbeat(response.heartbeat_interval),
            listen=plan.listen,
            address=plan.address,
            runtime=plan.runtime,
            mode=plan.mode,
            gateway_addresses=tuple(response.gateway_addresses),
        )
        try:
            atomic_write(files.ca, response.trust_bundle)
            atomic_write(files.cert, response.certificate_chain)
            atomic_write(files.jwks, response.jwks)
            atomic_write(files.deny_list, response.deny_list)
            atomic_write(files.config, _node_config(files, plan, issuers))
            atomic_write(state_dir / POLICY_FILE, policy_from_pb(response.policy).to_json())
            if new_seal:
                write_seal_key(state_dir, seal)
                wrote_seal = True
            atomic_write(files.joined, joined.to_json())  # last: the commit point
        except OSError as exc:
            raise ConfigError(f"cannot write in {state_dir}: {exc.strerror}") from None
    except BaseException:
        if created_key:
            with contextlib.suppress(OSError):
                files.key.unlink()
        if wrote_seal:
            with contextlib.suppress(OSError):
                (state_dir / SEAL_KEY_FILE).unlink()
        if created_dir:
            with contextlib.suppress(OSError):
                state_dir.rmdir()  # only when empty: never removes anything else
        raise
    log.info("joined as %s; gateway %s", joined.node_id, joined.gateway_address)
    return joined


def ensure_joined(
    state_dir: Path,
    orchestrator: str | None,
    token: str | None,
    ca_file: Path | None,
    options: JoinOptions = JoinOptions(),
    *,
    timeout: float = JOIN_TIMEOUT,
    now: float | None = None,
) -> tuple[Joined, bool]:
    """The node's membership: the one recorded in ``state_dir`` (reused, the token is
    neither needed nor sent), else a new join. Returns ``(joined, reused)``."""
    existing = load_joined(state_dir)
    if existing is not None:
        if token:
            log.info(
                "%s already joined as %s; the join token is not used", state_dir, existing.node_id
            )
        return existing, True
    if not orchestrator:
        raise ConfigError(f"{state_dir} holds no joined node: the orchestrator address is needed")
    if not token:
        raise ConfigError(f"{state_dir} holds no joined node: a join token (--token) is needed")
    if ca_file is None:
        raise ConfigError(f"{state_dir} holds no joined node: the cluster CA file (--ca) is needed")
    return join(state_dir, orchestrator, token, ca_file, options, timeout=timeout, now=now), False
