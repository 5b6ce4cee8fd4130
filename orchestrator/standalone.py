"""``capstan run``: a topology file started directly on this host's runtime, no daemon.

The same file ``capstan apply`` takes; each replica becomes one container named
``<app>-<service>-<index>`` on the local runtime (docker when an engine answers,
else process), services started in link order. There is no orchestrator, no PKI
and no token here: the CLI is the runtime's only caller.

Each application gets its own state directory ``$CAPSTAN_HOME/run/<tenant>-<app>``
and runtime scope, node id ``spiffe://standalone.capstan/node/<tenant>-<app>-<h>``
where ``<h>`` is derived from that directory: two files (or two users sharing one
Docker Engine) run side by side, and ``--down`` touches only its own containers.
In the foreground the runner restarts instances as their restart policy says and
removes everything on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import dataclasses
import hashlib
import threading
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from nacl.public import PublicKey, SealedBox

from node import pinned
from node.audit import NodeAudit
from node.errors import NodeError, NotFound
from node.links import LinkManager
from node.runtime import select_runtime
from node.runtime.base import (
    ContainerSpec,
    ContainerState,
    ContainerStatus,
    LinkSpec,
    PortSpec,
    Runtime,
    VolumeMount,
)
from node.runtime.images import ensure_image
from node.secretfiles import SecretFiles
from node.volumes import VolumeStore
from orchestrator import links
from orchestrator.context import capstan_home
from pki.errors import ConfigError
from pki.identity import Identity, Kind
from protos import node_pb2
from protos import topology_pb2 as tpb

__all__ = ["Instance", "Standalone", "instances", "node_id", "start_order"]


class MissingSecret(ConfigError):
    """The file names a secret that no --secret gave a value for."""


TRUST_DOMAIN = "standalone.capstan"
_NETWORKS = {tpb.NETWORK_MODE_HOST: "host"}
_STOP_TIMEOUT = 5.0


@dataclass(frozen=True)
class Instance:
    """One replica of one service, as a container spec plus its restart policy."""

    spec: ContainerSpec
    service: str
    index: int
    restart: int  # tpb.RestartPolicy
    secrets: tuple[tpb.ServiceSecret, ...] = ()


def scope(app: tpb.Application) -> str:
    return f"{app.tenant or 'default'}-{app.name}"


def node_id(app: tpb.Application, state_dir: Path) -> str:
    tag = hashlib.sha256(str(state_dir).encode()).hexdigest()[:8]
    return Identity(TRUST_DOMAIN, Kind.NODE, f"{scope(app)}-{tag}").uri


def start_order(app: tpb.Application) -> list[tpb.Service]:
    """Services with every linked service before the services that link to it
    (the loader has already refused cycles); file order otherwise."""
    by_name = {s.name: s for s in app.services}
    done: dict[str, None] = {}

    def visit(svc: tpb.Service) -> None:
        if svc.name in done:
            return
        for target in svc.links:
            visit(by_name[target])
        done[svc.name] = None

    for svc in app.services:
        visit(svc)
    return [by_name[n] for n in done]


def instances(app: tpb.Application) -> list[Instance]:
    out: list[Instance] = []
    tenant = app.tenant or "default"
    for svc in start_order(app):
        specs = links.link_specs(tenant, app, svc)
        env = {e.name: e.value for e in links.link_env(specs)}
        env.update(svc.env)  # the service's own env wins, as on a cluster
        for index in range(svc.replicas):
            name = f"{app.name}-{svc.name}-{index}"
            out.append(
                Instance(
                    spec=ContainerSpec(
                        name=name,
                        workload_id=f"{app.tenant or 'default'}.{app.name}.{svc.name}.{index}",
                        image=svc.image,
                        command=tuple(svc.command),
                        env=tuple(sorted(env.items())),
                        cpu=svc.resources.cpu,
                        memory=svc.resources.memory,
                        volumes=tuple(
                            VolumeMount(v.name, v.path, v.read_only) for v in svc.volumes
                        ),
                        network=_NETWORKS.get(svc.network, "none"),
                        service=links.service_ref(tenant, app.name, svc.name),
                        ports=tuple(
                            PortSpec(p.port, p.publish)
                            for p in svc.ports
                            if p.protocol != tpb.PROTOCOL_UDP
                        ),
                        links=tuple(
                            LinkSpec(x.service, x.address, tuple(x.ports), x.target) for x in specs
                        ),
                    ),
                    service=svc.name,
                    index=index,
                    restart=svc.restart,
                    secrets=tuple(svc.secrets),
                )
            )
    return out


class Standalone:
    """Runs one application on the local runtime."""

    def __init__(
        self,
        app: tpb.Application,
        *,
        runtime: str | None = None,
        home: Path | None = None,
        echo: Callable[[str], None] = lambda _line: None,
        publish_host: str = "127.0.0.1",
        secrets: Mapping[str, bytes] | None = None,
    ) -> None:
        self.app = app
        # Values of the file's secrets, read by the CLI from local files (--secret):
        # they reach instances the way a node's do, as 0400 files on a tmpfs.
        self._values = dict(secrets or {})
        self.state_dir = ((home or capstan_home()) / "run" / scope(app)).absolute()
        self.node_id = node_id(app, self.state_dir)
        self._echo = echo
        self.runtime: Runtime = select_runtime(runtime, self.node_id, self.state_dir)
        # Links and published ports, as a node agent serves them (one host: no tunnel).
        self.links = LinkManager(
            self.runtime,
            node_id=self.node_id,
            publish_host=publish_host,
            audit=NodeAudit(self.state_dir / "audit.jsonl"),
            revoked=frozenset,
        )
        self._links_started = False
        self._secret_files: SecretFiles | None = None

    @property
    def serves_links(self) -> bool:
        """The application has links or published ports: the runner must stay to serve them."""
        return any(s.links or any(p.publish for p in s.ports) for s in self.app.services)

    def close(self) -> None:
        if self._links_started:
            self.links.stop()
        self.runtime.close()

    def __enter__(self) -> Standalone:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def up(self) -> list[ContainerStatus]:
        """Create and start every instance; an instance already there is replaced."""
        planned = instances(self.app)
        for image in dict.fromkeys(i.spec.image for i in planned):
            # A pinned image (name@sha256:...) runs only from a copy of that content.
            ensure_image(self.runtime, pinned.split(image)[0])
        volumes = VolumeStore.for_state_dir(self.state_dir)
        for name in dict.fromkeys(m.name for i in planned for m in i.spec.volumes):
            volumes.ensure(name)
        if self.serves_links and not self._links_started:
            self.links.start()
            self._links_started = True
        missing = sorted({s.name for i in planned for s in i.secrets} - set(self._values))
        if missing:
            raise MissingSecret(f"secrets {', '.join(missing)}: give each with --secret NAME=FILE")
        started: list[ContainerStatus] = []
        for inst in planned:
            self._remove(inst.spec.name)
            spec = pinned.runnable(self.runtime, inst.spec)
            if inst.secrets:
                spec = self._with_secrets(spec, inst.secrets)
            self.runtime.create(spec)
            started.append(self.runtime.start(inst.spec.name))
            self._echo(f"started {inst.spec.name} ({self.runtime.name})")
        return started

    def _files(self) -> SecretFiles:
        if self._secret_files is None:
            self._secret_files = SecretFiles(self.state_dir)
        return self._secret_files

    def _with_secrets(
        self, spec: ContainerSpec, refs: Iterable[tpb.ServiceSecret]
    ) -> ContainerSpec:
        # The node's own path: sealed to this host's seal key and opened into files, so
        # one implementation writes every secret file Capstan writes.
        files = self._files()
        box = SealedBox(PublicKey(files.public_key))
        sealed = [
            node_pb2.SealedSecret(
                name=r.name,
                path=r.path,
                env=r.env,
                version=1,
                sealed=box.encrypt(self._values[r.name]),
            )
            for r in refs
        ]
        uid, gid = self.runtime.secret_owner(spec)
        mounts, env = files.open(spec.name, sealed, uid, gid)
        files.created(spec.name)
        return dataclasses.replace(spec, secrets=mounts, env=(*spec.env, *env))

    def down(self) -> list[str]:
        """Remove every container of this application (also ones a smaller file dropped)."""
        from node.runtime.docker import DockerRuntime

        names = [status.name for status in self.runtime.list()]

        def remove(name: str) -> str:
            self._remove(name)
            self._echo(f"removed {name}")
            return name

        removed: list[str] = []
        if names:
            # In parallel: each stop may wait its whole grace period for a workload that
            # ignores SIGTERM (a shell as PID 1 does); Ctrl-C should not add them up.
            with ThreadPoolExecutor(max_workers=min(16, len(names))) as pool:
                removed = list(pool.map(remove, names))
        if isinstance(self.runtime, DockerRuntime):
            self.runtime.forget_images()  # this application's tags on the shared engine
        if (self.state_dir / "secrets").exists():
            files = self._files()
            files.prune(())  # every instance is gone: so are their secret files
            files.close(unmount_any=True)
        return removed

    def _remove(self, name: str) -> None:
        try:
            self.runtime.stop(name, _STOP_TIMEOUT)
        except NotFound:
            return
        except NodeError:
            pass  # removal below is forced anyway
        try:
            self.runtime.remove(name, force=True)
        except NotFound:
            return

    def supervise(self, stop: threading.Event, *, interval: float = 1.0) -> None:
        """Until ``stop`` is set: restart exited instances as their policy says."""
        policy = {i.spec.name: i.restart for i in instances(self.app)}
        while not stop.wait(interval):
            for status in self.runtime.list():
                if status.state not in (ContainerState.EXITED, ContainerState.DEAD):
                    continue
                rule = policy.get(status.name, tpb.RESTART_POLICY_NEVER)
                failed = status.exit_code != 0
                if rule == tpb.RESTART_POLICY_ALWAYS or (
                    rule == tpb.RESTART_POLICY_ON_FAILURE and failed
                ):
                    self._echo(f"{status.name} exited ({status.exit_code}); restarting")
                    self.runtime.start(status.name)

    def follow_logs(
        self, names: Iterable[str], write: Callable[[str], None]
    ) -> list[threading.Thread]:
        """One daemon thread per instance printing ``name | line`` as output arrives."""
        threads = []
        for name in names:
            t = threading.Thread(target=self._pump, args=(name, write), daemon=True)
            t.start()
            threads.append(t)
        return threads

    def _pump(self, name: str, write: Callable[[str], None]) -> None:
        pending = b""
        try:
            for chunk in self.runtime.logs(name, follow=True):
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    write(f"{name} | {line.decode('utf-8', 'replace')}")
        except NodeError:
            pass  # the container went away: stop following
        if pending:
            write(f"{name} | {pending.decode('utf-8', 'replace')}")
