"""The runtime interface every node runtime (docker, process) implements.

Runtimes speak only in these dataclasses and the errors of ``node.errors``; the
gRPC layer maps them to protobuf. Every object a runtime creates is labelled with
the node id so several agents can share one engine and each sees only its own.
"""

from __future__ import annotations

import builtins
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol, runtime_checkable


class ContainerState(StrEnum):
    CREATED = "created"
    RUNNING = "running"
    EXITED = "exited"
    DEAD = "dead"  # vanished underneath the agent (reported after a restart)
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class VolumeMount:
    name: str  # a volume of this node's VolumeStore
    path: str  # absolute path inside the workload
    read_only: bool = False


@dataclass(frozen=True)
class PortSpec:
    """A TCP port the workload listens on in its own network namespace."""

    port: int
    publish: int = 0  # > 0: the agent listens on the node's address here and forwards


@dataclass(frozen=True)
class LinkSpec:
    """A linked service as the workload sees it: ``service`` resolves to ``address``
    (loopback), where each of ``ports`` leads to an instance of ``target``."""

    service: str  # the name the workload uses (hosts entry)
    address: str  # 127.0.0.0/8, never 127.0.0.1
    ports: tuple[int, ...]
    target: str  # tenant/app/service


@dataclass(frozen=True)
class NetSpec:
    """What the data plane needs to know of one running instance."""

    netns: str  # /proc/<pid>/ns/net of its first process
    isolated: bool  # its own namespace (False: it shares the node's)
    service: str  # tenant/app/service ("" for a container outside any application)
    ports: tuple[PortSpec, ...]
    links: tuple[LinkSpec, ...]


@dataclass(frozen=True)
class SecretMount:
    """A host directory of an instance's secret files (memory-backed, node/secretfiles)
    and the directory the instance sees it at, always read-only."""

    source: str
    path: str


@dataclass(frozen=True)
class ContainerSpec:
    """What the orchestrator asks a node to run. ``name`` is the node-unique container name."""

    name: str
    workload_id: str
    image: str
    command: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    cpu: float = 0.0  # cores; 0 = unlimited
    memory: int = 0  # bytes; 0 = unlimited
    volumes: tuple[VolumeMount, ...] = ()
    network: str = "none"  # "none" or "host"; no bridge networking
    labels: tuple[tuple[str, str], ...] = ()
    service: str = ""  # tenant/app/service: what a link tunnel's res may name
    ports: tuple[PortSpec, ...] = ()
    links: tuple[LinkSpec, ...] = ()
    # The sandbox's knobs (docs/sandbox.md); each default is the strictest setting.
    user: str = ""  # "UID" or "UID:GID"; "" = the tenant's own non-root uid
    seccomp: str = ""  # "" = the engine's default profile, or a stricter one of Capstan's
    cap_add: tuple[str, ...] = ()  # capabilities given back (all are dropped otherwise)
    low_ports: bool = False  # may bind ports below 1024 in its own network namespace
    secrets: tuple[SecretMount, ...] = ()  # written by the node agent, never by the spec


@dataclass(frozen=True)
class ContainerStatus:
    name: str
    workload_id: str
    image: str
    state: ContainerState
    runtime_id: str = ""
    exit_code: int | None = None
    started_at: float | None = None  # unix seconds
    finished_at: float | None = None
    pid: int | None = None


@dataclass(frozen=True)
class ContainerStats:
    name: str
    cpu_seconds: float  # cumulative CPU time consumed
    cpu_fraction: float  # recent CPU use in cores (1.0 = one core busy)
    memory_bytes: int
    memory_limit: int  # 0 = unlimited


@dataclass(frozen=True)
class RuntimeInfo:
    runtime: str  # "docker" or "process"
    version: str
    cpus: float
    memory: int
    extra: dict[str, str] = field(default_factory=dict)


class ExecProcess(Protocol):
    """A command started in a running container (``Runtime.exec``)."""

    def write(self, data: bytes) -> None: ...
    def close_stdin(self) -> None: ...
    # (1, data) for stdout, (2, data) for stderr, until the command's output ends.
    def output(self) -> Iterator[tuple[int, bytes]]: ...
    def wait(self) -> int: ...  # exit code, 128 + N for signal N
    def kill(self) -> None: ...  # idempotent; ends output()


@runtime_checkable
class Runtime(Protocol):
    """A container runtime scoped to one node id."""

    name: str
    node_id: str

    def create(self, spec: ContainerSpec) -> ContainerStatus: ...
    def start(self, name: str) -> ContainerStatus: ...
    def stop(self, name: str, timeout: float = 10.0) -> ContainerStatus: ...
    def restart(self, name: str, timeout: float = 10.0) -> ContainerStatus: ...
    def remove(self, name: str, force: bool = False) -> None: ...
    def inspect(self, name: str) -> ContainerStatus: ...
    def list(self) -> builtins.list[ContainerStatus]: ...
    def logs(self, name: str, *, follow: bool = False, tail: int = 0) -> Iterator[bytes]: ...
    def stats(self, name: str) -> ContainerStats: ...
    def image_exists(self, ref: str) -> bool: ...
    # The refs this node has (each one ``image_exists`` says yes to), each with its tag;
    # cheap enough to call on every heartbeat.
    def images(self) -> builtins.list[str]: ...
    # ``{ref with its tag: image id}`` of every ref ``images`` lists; the id is the
    # SHA-256 of the image's config, the digest an orchestrator pins.
    def image_ids(self) -> dict[str, str]: ...
    def image_export(self, ref: str) -> Iterator[bytes]: ...
    def image_import(self, chunks: Iterable[bytes]) -> builtins.list[str]: ...
    def info(self) -> RuntimeInfo: ...
    # The data plane (node/links): the network namespace and link spec of a running
    # instance, None when it does not run. One implementation per runtime, shared with
    # the sandbox: docker gives the container's State.Pid, the process runtime its
    # first process; both as /proc/<pid>/ns/net.
    def net_spec(self, name: str) -> NetSpec | None: ...
    def secret_owner(self, spec: ContainerSpec) -> tuple[int, int]:
        """The uid and gid the instance runs as: its secret files are theirs, 0400."""
        ...

    # A command in the running container ``name``, in its environment: exec's
    # process. NotFound when there is no such container, Conflict when it is not running.
    def exec(
        self, name: str, command: Sequence[str], *, tty: bool = False, stdin: bool = False
    ) -> ExecProcess: ...
    def close(self) -> None: ...
