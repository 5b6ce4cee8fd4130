"""A whole cluster on one host: ``capstan up``, ``capstan down``, ``capstan status``.

``up`` makes (or reuses) a PKI, issues the admin user certificate, starts
``capstan orchestrator serve`` and N ``capstan node join`` agents as background
processes (each in its own session, output to a log file), one loopback address per
node (127.0.0.2, 127.0.0.3, ...; the same port on each), waits until every node
is ready, and writes the context ``local``. Everything lives in one directory
(``$CAPSTAN_HOME/local`` by default)::

    pki/                    the cluster's CA (kept by ``down`` unless --purge)
    admin/                  ca.crt, admin.crt, admin.key: the context's credentials
    orchestrator/           store.db, orchestrator.log
    nodes/node-N/           the node's state directory, node.log
    cluster.json            what was started: pids (with start times), addresses, ids
    .lock                   one up/down at a time

With ``--ha``: three etcd members (Debian's ``etcd``, client and peer mTLS from
``capstan pki etcd``: ``pki/etcd/``) in ``etcd/etcd-N/``, and three orchestrators
``o1``..``o3`` in ``orchestrator/oN/`` on 127.0.0.1 ports PORT, PORT+3, PORT+5 (joins
on the next port); etcd clients on PORT+7, PORT+9, PORT+11 (peers one above). The
context ``local`` names the three orchestrators; nodes join through the leader.

``cluster.json`` is rewritten after every process start, so ``down`` can stop
whatever a failed ``up`` left. A pid is signalled only while its start time
matches the recorded one: a recycled pid is never hit.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from cryptography import x509

from node.runtime import proc, resolve_runtime
from orchestrator.client import ControlClient, ControlError
from orchestrator.context import Context, ContextConfig, capstan_home
from pki.authority import Authority
from pki.errors import CapstanError, ConfigError
from pki.identity import Identity, Kind
from protos.wire import images

__all__ = [
    "CONTEXT_NAME",
    "DEFAULT_BASE_PORT",
    "TRUST_DOMAIN_SUFFIX",
    "ClusterRecord",
    "LocalCluster",
    "LocalClusterError",
    "ProcessRecord",
    "default_dir",
]

CONTEXT_NAME = "local"
# Each local cluster gets its own trust domain, local-<random>.capstan: node ids
# label containers on a Docker Engine that several clusters (and users) may share,
# and one cluster must never see or remove another's.
TRUST_DOMAIN_SUFFIX = "capstan"
DEFAULT_BASE_PORT = 7300
ADMIN_TTL = 30 * 86400.0  # the longest a user certificate may live; re-issued by `up`
ADMIN_RENEW_BEFORE = 86400.0
JOIN_TOKEN_TTL = 600.0
READY_TIMEOUT = 60.0  # seconds each step of `up` may take
STOP_GRACE = 10.0  # seconds between SIGTERM and SIGKILL
LOG_TAIL_LINES = 15
_POLL = 0.1

_ORCH_READY = re.compile(r"^orchestrator (\S+) listening on (\S+) join on (\S+)\s*$", re.M)
_NODE_READY = re.compile(r"^node (\S+) listening on (\S+) runtime=(\S+)\s*$", re.M)


class LocalClusterError(CapstanError):
    """The local cluster could not be started, stopped or read."""


def default_dir() -> Path:
    return capstan_home() / "local"


@dataclass
class ProcessRecord:
    """One process ``up`` started."""

    role: str  # "orchestrator" or "node"
    name: str
    pid: int
    start_ticks: int | None
    log: str
    listen: str
    node_id: str = ""
    state_dir: str = ""
    log_offset: int = 0  # where this run's output starts in ``log``
    metrics: str = ""  # HOST:PORT of its Prometheus endpoint

    def alive(self) -> bool:
        return proc.is_same_alive(self.pid, self.start_ticks)


@dataclass
class ClusterRecord:
    """The content of ``cluster.json``."""

    directory: str
    trust_domain: str
    runtime: str
    base_port: int
    nodes: int
    endpoint: str
    join_endpoint: str
    orchestrator_id: str = ""
    processes: list[ProcessRecord] = field(default_factory=list)
    ha: bool = False  # three etcd members and three orchestrators

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str, source: Path) -> ClusterRecord:
        try:
            doc = json.loads(text)
            doc["processes"] = [ProcessRecord(**p) for p in doc.get("processes", [])]
            return cls(**doc)
        except (ValueError, TypeError, KeyError, AttributeError):
            raise LocalClusterError(f"{source} is corrupted; remove it by hand") from None

    def node_records(self) -> list[ProcessRecord]:
        return [p for p in self.processes if p.role == "node"]


#: Prometheus endpoints from PORT+13 on (PORT..PORT+12 are the control plane's).
METRICS_OFFSET = 13


def metrics_address(index: int, base_port: int) -> str:
    """The Prometheus endpoint of node ``index``, on its own loopback address."""
    return f"127.0.0.{index + 1}:{base_port + METRICS_OFFSET}"


def orchestrator_metrics(member: int, base_port: int) -> str:
    """The Prometheus endpoint of the orchestrator (member 0) or HA member 1..3."""
    return f"127.0.0.1:{base_port + METRICS_OFFSET + max(member - 1, 0)}"


def node_address(index: int, port: int) -> str:
    """Node ``index`` (1-based) listens on 127.0.0.<index + 1>: one loopback address each."""
    if not 1 <= index <= 250:
        raise ConfigError(f"node index {index} is out of range (1..250)")
    return f"127.0.0.{index + 1}:{port}"


class LocalCluster:
    """The local cluster in ``directory``. ``python`` runs the capstan CLI for the
    processes it starts (``python -m orchestrator.cli``)."""

    def __init__(
        self,
        directory: Path | None = None,
        *,
        python: str = sys.executable,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        echo: Callable[[str], None] = lambda _line: None,
    ) -> None:
        self.directory = (directory or default_dir()).absolute()
        self.python = python
        self._clock = clock
        self._sleep = sleep
        self._seeded: list[tuple[str, str]] = []  # (node, pinned image) put there by `up`
        self._echo = echo
        self.resumed: list[str] = []  # what the last `up` restarted in a partly running cluster

    # -- layout ---------------------------------------------------------------------------

    @property
    def pki_dir(self) -> Path:
        return self.directory / "pki"

    @property
    def admin_dir(self) -> Path:
        return self.directory / "admin"

    @property
    def record_path(self) -> Path:
        return self.directory / "cluster.json"

    def node_dir(self, name: str) -> Path:
        return self.directory / "nodes" / name

    def context(self, endpoint: str) -> Context:
        return Context(
            CONTEXT_NAME,
            endpoint,
            self.admin_dir / "ca.crt",
            self.admin_dir / "admin.crt",
            self.admin_dir / "admin.key",
        )

    # -- record ---------------------------------------------------------------------------

    def load(self) -> ClusterRecord | None:
        try:
            text = self.record_path.read_text()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise LocalClusterError(f"{self.record_path}: {exc.strerror}") from None
        return ClusterRecord.from_json(text, self.record_path)

    def _save(self, record: ClusterRecord) -> None:
        tmp = self.record_path.with_suffix(".tmp")
        tmp.write_text(record.to_json())
        os.replace(tmp, self.record_path)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        try:
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(self.directory / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise LocalClusterError(f"cannot use {self.directory}: {exc.strerror}") from None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                raise LocalClusterError(
                    f"another capstan up/down is running on {self.directory}"
                ) from None
            yield
        finally:
            os.close(fd)

    # -- up -------------------------------------------------------------------------------

    def up(
        self,
        *,
        nodes: int = 3,
        runtime: str = "auto",
        base_port: int = DEFAULT_BASE_PORT,
        image_nodes: Sequence[int] | None = None,
        require_image: bool = False,
        ha: bool = False,
    ) -> tuple[ClusterRecord, bool]:
        """Start the cluster; ``(record, started)``, started False when it was already up.

        ``image_nodes`` (1-based) lists the nodes given the demo image before they
        start (default: all); ``require_image`` makes a missing busybox an error.
        """
        if nodes < 1 or nodes > 250:
            raise ConfigError(f"--nodes must be between 1 and 250, got {nodes}")
        top = 65535 - METRICS_OFFSET - (2 if ha else 0)  # the last metrics port fits
        if not 1024 <= base_port <= top:
            raise ConfigError(f"--base-port must be between 1024 and {top}, got {base_port}")
        with self._locked():
            existing = self.load()
            if existing is not None:
                alive = [p for p in existing.processes if p.alive()]
                if alive and len(alive) == len(existing.processes):
                    # Still renew the admin certificate: `up` is what users re-run.
                    self._admin_credentials(self._authority())
                    return existing, False
                if alive:
                    self._admin_credentials(self._authority())
                    self.resumed = self._resume(existing)
                    return existing, True
                self._teardown(existing)  # a stale record: containers may still be there
            kind = resolve_runtime(runtime)
            record = ClusterRecord(
                directory=str(self.directory),
                trust_domain="",
                runtime=kind,
                base_port=base_port,
                nodes=nodes,
                endpoint=f"127.0.0.1:{base_port}",
                join_endpoint=f"127.0.0.1:{base_port + 1}",
                ha=ha,
            )
            node_port = base_port + 2
            control = [record.endpoint, record.join_endpoint]
            if ha:
                record.endpoint = ",".join(a for a, _ in _ha_orchestrators(base_port))
                control = [a for pair in _ha_orchestrators(base_port) for a in pair]
                control += [f"127.0.0.1:{p}" for pair in _ha_etcd(base_port) for p in pair]
            _check_free(
                [
                    *control,
                    *(node_address(i, node_port) for i in range(1, nodes + 1)),
                    *(metrics_address(i, base_port) for i in range(1, nodes + 1)),
                    *(orchestrator_metrics(m, base_port) for m in ((1, 2, 3) if ha else (0,))),
                ]
            )
            authority = self._authority()
            record.trust_domain = authority.trust_domain
            self._admin_credentials(authority)
            self._prepare_nodes(record, image_nodes, require_image=require_image)
            try:
                self._start(record, node_port)
            except BaseException:
                self._teardown(record)
                raise
            self._save_context(record.endpoint)
            return record, True

    def _authority(self) -> Authority:
        if (self.pki_dir / "state.json").exists():
            return Authority.open(self.pki_dir)
        domain = f"local-{secrets.token_hex(3)}.{TRUST_DOMAIN_SUFFIX}"
        self._echo(f"creating PKI for {domain} in {self.pki_dir}")
        return Authority.init(self.pki_dir, domain)

    def _admin_credentials(self, authority: Authority) -> None:
        """The admin user's certificate, issued again when missing or near its end."""
        cert_path = self.admin_dir / "admin.crt"
        if cert_path.exists() and (self.admin_dir / "admin.key").exists():
            try:
                cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
                left = cert.not_valid_after_utc.timestamp() - time.time()
                if left > ADMIN_RENEW_BEFORE:
                    return
            except (ValueError, OSError):
                pass  # unreadable: issue a new one below
        issued = authority.issue(Kind.USER, "admin", role="admin", ttl=ADMIN_TTL)
        assert issued.key_pem is not None  # noqa: S101 - issue() always returns the key
        from pki.files import atomic_write, write_private_key

        self.admin_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_private_key(self.admin_dir / "admin.key", issued.key_pem, overwrite=True)
        atomic_write(self.admin_dir / "admin.crt", issued.chain_pem)
        atomic_write(self.admin_dir / "ca.crt", authority.trust_bundle())

    def _prepare_nodes(
        self, record: ClusterRecord, image_nodes: Sequence[int] | None, *, require_image: bool
    ) -> None:
        """Fresh state directories, and the demo image on the nodes that should hold it.
        Images go in before the agents start: the process runtime's image store is
        locked by its agent while it runs."""
        from node.runtime.images import busybox_binary

        shutil.rmtree(self.directory / "nodes", ignore_errors=True)
        shutil.rmtree(self.directory / "orchestrator", ignore_errors=True)
        wanted = range(1, record.nodes + 1) if image_nodes is None else image_nodes
        if busybox_binary() is None:
            if require_image:
                raise LocalClusterError(
                    "the demo needs local/busybox:1, built from the host's busybox: "
                    "install busybox-static"
                )
            self._echo("no busybox installed: local/busybox:1 not prepared")
            return
        from node.runtime import select_runtime
        from node.runtime.images import ensure_image

        for index in wanted:
            name = f"node-{index}"
            runtime = select_runtime(record.runtime, _node_id(record, name), self.node_dir(name))
            try:
                ref = ensure_image(runtime)
                # The admin put it there: told to the orchestrator once it runs, so it
                # may be fetched from this node (nodes are never believed about images).
                digest = runtime.image_ids().get(images.with_tag(ref))
                if digest:
                    self._seeded.append((name, images.pin(ref, digest)))
            finally:
                runtime.close()

    def _start(self, record: ClusterRecord, node_port: int) -> None:
        if record.ha:
            self._start_etcd(record)
            for member in range(1, 4):
                self._start_orchestrator(record, member)
        else:
            self._start_orchestrator(record)
        with ControlClient(self.context(record.endpoint)) as client:
            if record.ha:
                record.join_endpoint = self._leader_join(client)
                self._save(record)
            started: list[ProcessRecord] = []
            for index in range(1, record.nodes + 1):
                name = f"node-{index}"
                token = client.create_join_token(name=name, ttl=JOIN_TOKEN_TTL).token
                started.append(self._start_node(record, index, node_port, token))
            for node in started:
                self._wait_line(node, _NODE_READY)
            self._wait_ready(client, record)
            for name, image in self._seeded:
                client.seed_image(name, image)

    def _start_orchestrator(self, record: ClusterRecord, member: int = 0) -> None:
        """The orchestrator; with ``member`` (HA) the member-th of three, on etcd."""
        orch_dir = self.directory / "orchestrator"
        name, listen, join = "orchestrator", record.endpoint, record.join_endpoint
        store = ["--store", str(orch_dir / "store.db")]
        if member:
            name = f"o{member}"
            listen, join = _ha_orchestrators(record.base_port)[member - 1]
            orch_dir = orch_dir / name
            etcd = self.pki_dir / "etcd"
            endpoints = ",".join(f"127.0.0.1:{c}" for c, _ in _ha_etcd(record.base_port))
            store = [
                "--etcd", endpoints, "--member", name,
                "--etcd-ca", str(etcd / "ca.crt"),
                "--etcd-cert", str(etcd / "client-orchestrator.crt"),
                "--etcd-key", str(etcd / "client-orchestrator.key"),
            ]  # fmt: skip
        orch_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._echo(f"starting {name} on {listen}")
        orch = self._spawn(
            record,
            "orchestrator",
            name,
            orch_dir / "orchestrator.log",
            [
                "orchestrator",
                "serve",
                "--pki-dir",
                str(self.pki_dir),
                "--listen",
                listen,
                "--join-listen",
                join,
                *store,
                "--name",
                "local",
                "--metrics-listen",
                orchestrator_metrics(member, record.base_port),
                "-v",
            ],
            listen=listen,
            metrics=orchestrator_metrics(member, record.base_port),
        )
        match = self._wait_line(orch, _ORCH_READY)
        record.orchestrator_id = match.group(1)
        self._save(record)

    def _start_etcd(self, record: ClusterRecord, only: Sequence[str] = ()) -> None:
        """The three etcd members with client and peer mTLS (``pki/etcd``)."""
        from orchestrator import etcdproc
        from pki import etcd as etcd_pki

        tls = []
        for i in range(1, 4):
            name = f"etcd-{i}"
            if not (self.pki_dir / "etcd" / f"{name}.key").exists():
                etcd_pki.issue_member(self.pki_dir, name)
            files = etcd_pki.EtcdFiles(
                self.pki_dir / "etcd" / "ca.crt",
                self.pki_dir / "etcd" / f"{name}.crt",
                self.pki_dir / "etcd" / f"{name}.key",
            )
            tls.append(etcdproc.MemberTLS(files.ca, files.cert, files.key))
        if not (self.pki_dir / "etcd" / "client-orchestrator.key").exists():
            etcd_pki.issue_client(self.pki_dir, "orchestrator")
        members = etcdproc.cluster(
            self.directory / "etcd", 3, ports=_ha_etcd(record.base_port), tls=tls
        )
        started = []
        for member in members:
            if only and member.name not in only:
                continue
            self._echo(f"starting {member.name} on {member.client_endpoint} (mTLS)")
            member.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            state = "existing" if (member.data_dir / "member").exists() else "new"
            started.append(
                self._spawn(
                    record,
                    "etcd",
                    member.name,
                    self.directory / "etcd" / f"{member.name}.log",
                    member.command(members, state=state),
                    listen=member.client_endpoint,
                    raw=True,
                )
            )
        for entry in started:
            self._wait_port(entry)

    def _wait_port(self, entry: ProcessRecord) -> None:
        host, _, port = entry.listen.rpartition(":")
        deadline = self._clock() + READY_TIMEOUT
        while True:
            with contextlib.suppress(OSError):
                socket.create_connection((host, int(port)), timeout=0.5).close()
                return
            _reap(entry.pid)
            if not entry.alive():
                raise LocalClusterError(
                    f"{entry.name} exited; {entry.log} ends with:\n" + log_tail(Path(entry.log))
                )
            if self._clock() >= deadline:
                raise LocalClusterError(f"{entry.name} does not listen on {entry.listen}")
            self._sleep(_POLL)

    def _leader_join(self, client: ControlClient) -> str:
        """The join address of the elected leader (nodes join through it)."""
        deadline = self._clock() + READY_TIMEOUT
        while True:
            with contextlib.suppress(ControlError):
                info = client.list_orchestrators()
                for m in info.members:
                    if m.leader and m.join_address:
                        self._echo(f"leader: {m.member} (epoch {info.epoch})")
                        return str(m.join_address)
            if self._clock() >= deadline:
                raise LocalClusterError("no orchestrator was elected leader")
            self._sleep(_POLL)

    def _start_node(
        self, record: ClusterRecord, index: int, node_port: int, token: str | None
    ) -> ProcessRecord:
        """Node ``index``'s agent; without a token it restarts the node its state holds."""
        name = f"node-{index}"
        state = self.node_dir(name)
        state.mkdir(parents=True, exist_ok=True, mode=0o700)
        listen = node_address(index, node_port)
        self._echo(f"starting {name} on {listen}")
        return self._spawn(
            record,
            "node",
            name,
            state.parent / f"{name}.log",
            [
                "node",
                "join",
                record.join_endpoint,
                "--ca",
                str(self.admin_dir / "ca.crt"),
                "--name",
                name,
                "--listen",
                listen,
                "--state-dir",
                str(state),
                "--runtime",
                record.runtime,
                "--metrics-listen",
                metrics_address(index, record.base_port),
                "-v",
            ],
            listen=listen,
            metrics=metrics_address(index, record.base_port),
            node_id=_node_id(record, name),
            state_dir=str(state),
            # In the environment, not argv: other local users can read argv.
            env={"CAPSTAN_JOIN_TOKEN": token} if token else None,
        )

    def _resume(self, record: ClusterRecord) -> list[str]:
        """Restart the recorded processes that died, keeping the store and the node
        state: the orchestrator finds its applications again, restarted agents rejoin
        with their certificates, and what runs on live nodes keeps running."""
        dead = [p for p in record.processes if not p.alive()]
        record.processes = [p for p in record.processes if p.alive()]
        self._save(record)
        restarted: list[str] = []
        etcd_dead = [p.name for p in dead if p.role == "etcd"]
        if etcd_dead:
            self._start_etcd(record, only=etcd_dead)
            restarted += etcd_dead
        for p in dead:
            if p.role == "orchestrator":
                self._start_orchestrator(record, int(p.name[1:]) if record.ha else 0)
                restarted.append(p.name)
        node_port = record.base_port + 2
        started = []
        for entry in dead:
            if entry.role != "node":
                continue
            index = int(entry.name.rpartition("-")[2])
            started.append(self._start_node(record, index, node_port, None))
            restarted.append(entry.name)
        for node in started:
            self._wait_line(node, _NODE_READY)
        with ControlClient(self.context(record.endpoint)) as client:
            self._wait_ready(client, record)
        self._save_context(record.endpoint)
        return restarted

    def _spawn(
        self,
        record: ClusterRecord,
        role: str,
        name: str,
        log: Path,
        args: list[str],
        *,
        listen: str,
        node_id: str = "",
        state_dir: str = "",
        env: dict[str, str] | None = None,
        metrics: str = "",
        raw: bool = False,
    ) -> ProcessRecord:
        """Start ``capstan ARGS`` (or, ``raw``, the command ``args`` itself)."""
        child_env = dict(os.environ, PYTHONUNBUFFERED="1", **(env or {}))
        command = args if raw else [self.python, "-m", "orchestrator.cli", *args]
        try:
            offset = log.stat().st_size  # a restart appends: its ready line comes after
        except OSError:
            offset = 0
        try:
            with log.open("ab") as out:
                child = subprocess.Popen(
                    command,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    env=child_env,
                    cwd=self.directory,
                )
        except OSError as exc:
            raise LocalClusterError(f"cannot start {name}: {exc.strerror or exc}") from None
        entry = ProcessRecord(
            role=role,
            name=name,
            pid=child.pid,
            start_ticks=proc.start_ticks(child.pid),
            log=str(log),
            listen=listen,
            node_id=node_id,
            state_dir=state_dir,
            log_offset=offset,
            metrics=metrics,
        )
        record.processes.append(entry)
        self._save(record)
        return entry

    def _wait_line(self, entry: ProcessRecord, pattern: re.Pattern[str]) -> re.Match[str]:
        """The process's ready line, or a LocalClusterError with its log's tail."""
        deadline = self._clock() + READY_TIMEOUT
        while True:
            match = pattern.search(_read(Path(entry.log), entry.log_offset))
            if match:
                return match
            _reap(entry.pid)
            if not entry.alive():
                raise LocalClusterError(
                    f"{entry.name} exited before it was ready; {entry.log} ends with:\n"
                    + log_tail(Path(entry.log))
                )
            if self._clock() >= deadline:
                raise LocalClusterError(
                    f"{entry.name} not ready after {READY_TIMEOUT:g}s; {entry.log} ends with:\n"
                    + log_tail(Path(entry.log))
                )
            self._sleep(_POLL)

    def _wait_ready(self, client: ControlClient, record: ClusterRecord) -> None:
        deadline = self._clock() + READY_TIMEOUT
        wanted = {p.name for p in record.node_records()}
        while True:
            try:
                ready = {n.name for n in client.list_nodes() if n.state == "ready"}
            except ControlError:
                ready = set()
            if wanted <= ready:
                return
            for entry in record.processes:
                _reap(entry.pid)
                if not entry.alive():
                    raise LocalClusterError(
                        f"{entry.name} exited; {entry.log} ends with:\n" + log_tail(Path(entry.log))
                    )
            if self._clock() >= deadline:
                missing = ", ".join(sorted(wanted - ready))
                raise LocalClusterError(f"nodes not ready after {READY_TIMEOUT:g}s: {missing}")
            self._sleep(_POLL)

    def _save_context(self, endpoint: str) -> None:
        config = ContextConfig.load(missing_ok=True)
        config.set(self.context(endpoint), select=True)
        config.save()

    # -- down -----------------------------------------------------------------------------

    def down(self, *, purge: bool = False) -> ClusterRecord | None:
        """Stop every process ``up`` started and remove their containers; the record
        stopped, or None when no cluster was recorded. ``purge`` also removes the PKI,
        the admin credentials and the context."""
        if not self.directory.exists():
            return None
        with self._locked():
            record = self.load()
            if record is not None:
                self._teardown(record)
        if purge:
            shutil.rmtree(self.directory, ignore_errors=True)
            config = ContextConfig.load(missing_ok=True)
            if CONTEXT_NAME in config.contexts:
                config.remove(CONTEXT_NAME)
                config.save()
        return record

    def _teardown(self, record: ClusterRecord) -> None:
        # The orchestrator first, so it does not react to its nodes going away.
        ordered = sorted(record.processes, key=lambda p: p.role != "orchestrator")
        stop_processes(ordered, clock=self._clock, sleep=self._sleep)
        problems: list[str] = []
        for entry in record.node_records():
            if not entry.state_dir:
                continue
            try:
                clean_node(record.runtime, entry.node_id, Path(entry.state_dir))
            except CapstanError as exc:
                problems.append(f"{entry.name}: {exc}")
        with contextlib.suppress(FileNotFoundError):
            self.record_path.unlink()
        # State goes; the logs stay (they say why a cluster died) until the next `up`.
        for entry in record.node_records():
            if entry.state_dir:
                shutil.rmtree(entry.state_dir, ignore_errors=True)
        for path in (self.directory / "orchestrator").glob("store.db*"):
            with contextlib.suppress(OSError):
                path.unlink()
        # etcd's data (the HA store) goes with the cluster, like store.db.
        for data in (self.directory / "etcd").glob("etcd-*"):
            if data.is_dir():
                shutil.rmtree(data, ignore_errors=True)
        if problems:
            raise LocalClusterError("containers left behind: " + "; ".join(problems))

    # -- status ---------------------------------------------------------------------------

    def status(self) -> ClusterRecord | None:
        return self.load()


def stop_processes(
    entries: Sequence[ProcessRecord],
    *,
    grace: float = STOP_GRACE,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """SIGTERM each live process's session, then SIGKILL what is left after ``grace``."""
    live = [e for e in entries if e.alive()]
    for entry in live:
        proc.signal_session(entry.pid, signal.SIGTERM)
    deadline = clock() + grace
    while True:
        for entry in live:
            _reap(entry.pid)
        live = [e for e in live if e.alive() or proc.session_members(e.pid)]
        if not live or clock() >= deadline:
            break
        sleep(_POLL)
    for entry in live:
        proc.signal_session(entry.pid, signal.SIGKILL)
        _reap(entry.pid)


def clean_node(runtime: str, node_id: str, state_dir: Path) -> int:
    """Remove every container of ``node_id`` (its agent must be stopped), and on
    docker its image tags too; how many containers there were."""
    from node.runtime import select_runtime
    from node.runtime.docker import DockerRuntime

    if runtime == "process" and not (state_dir / "state.db").exists():
        return 0
    rt = select_runtime(runtime, node_id, state_dir)
    try:
        containers = rt.list()
        for c in containers:
            rt.remove(c.name, force=True)
        if isinstance(rt, DockerRuntime):
            rt.forget_images()
        return len(containers)
    finally:
        rt.close()


def _ha_orchestrators(base_port: int) -> list[tuple[str, str]]:
    """(listen, join) of o1..o3: PORT/PORT+1, PORT+3/PORT+4, PORT+5/PORT+6 (PORT+2 is
    the nodes' port, on their own addresses)."""
    return [
        (f"127.0.0.1:{base_port + a}", f"127.0.0.1:{base_port + a + 1}") for a in (0, 3, 5)
    ]


def _ha_etcd(base_port: int) -> list[tuple[int, int]]:
    """(client, peer) ports of etcd-1..3: PORT+7/8, PORT+9/10, PORT+11/12."""
    return [(base_port + 7 + 2 * i, base_port + 8 + 2 * i) for i in range(3)]


def _node_id(record: ClusterRecord, name: str) -> str:
    return Identity(record.trust_domain, Kind.NODE, name).uri


def _check_free(addresses: Sequence[str]) -> None:
    for address in addresses:
        host, _, port = address.rpartition(":")
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            # As the servers do: connections of a cluster just stopped (TIME_WAIT) do
            # not hold the port, a listener does.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((host, int(port)))
            except OSError as exc:
                raise LocalClusterError(
                    f"cannot listen on {address}: {exc.strerror} (choose another --base-port)"
                ) from None


def _reap(pid: int) -> None:
    """Collect our own exited child (a test runs up in-process); others are not ours."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def _read(path: Path, offset: int = 0) -> str:
    try:
        with path.open("rb") as fh:
            fh.seek(offset)
            return fh.read().decode(errors="replace")
    except OSError:
        return ""


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    text = _read(path).rstrip("\n").splitlines()[-lines:]
    return "\n".join("  " + line for line in text) if text else "  <empty>"
