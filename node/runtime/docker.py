"""The Docker runtime: containers of one node id on a (possibly shared) Docker Engine.

Every container carries the labels ``capstan.node``/``capstan.workload``/``capstan.name``
and a Docker name ``capstan-<node hash>-<name>``; every lookup checks the node label,
so an agent neither sees nor touches containers of another agent on the same engine.
Containers never get bridge networking, privileges or new privileges; volumes are
bind mounts of the node's VolumeStore directories. Every container gets the
sandbox's defaults (docs/sandbox.md): the tenant's non-root uid unless the spec names
one, a read-only root with a tmpfs ``/tmp``, no capabilities but those the pool
granted, a seccomp profile passed by content, a PIDs limit, no devices, private IPC.

Images are per node too, though Docker's tags are global to the engine: this node
has image ``R`` exactly when the engine holds the node-scoped tag
``capstan-<node hash>/<R>`` (the mapping, reversible and collision-free, is in
``_docker_names``). Containers run the node-scoped tag; exports carry the plain
``R``; imports tag only the node's namespace (``_docker_archive`` strips the
archive's names before ``docker load``). The engine's global tags are never
consulted, except by ``adopt_image``, which seeds a node from them.
"""

from __future__ import annotations

import builtins
import itertools
import json
import math
import threading
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import docker
import docker.types

from node.errors import FailedPrecondition, InvalidArgument, NodeError, NotFound, RuntimeFailure
from node.policy import load_policy
from node.runtime._docker_archive import CHUNK, ImportedArchive, retag_export
from node.runtime._docker_errors import docker_errors, mapped_stream
from node.runtime._docker_names import namespace, node_hash, node_ref, ref_of, split_ref
from node.runtime._docker_status import (
    LABEL_IMAGE,
    LABEL_NAME,
    LABEL_NET,
    LABEL_NODE,
    LABEL_WORKLOAD,
    labels_of,
    stats_from_sample,
    status_from_inspect,
)
from node.runtime._exec import SocketExec
from node.runtime._netspec import net_from_json, net_to_json
from node.runtime._sandbox import DEFAULT_PIDS, TMP_BYTES
from node.runtime._users import TenantUids, tenant_of
from node.runtime.base import (
    ContainerSpec,
    ContainerState,
    ContainerStats,
    ContainerStatus,
    NetSpec,
    RuntimeInfo,
)
from node.seccomp import profile_text
from node.validation import validate_image_ref, validate_name, validate_spec, validate_user
from node.volumes import VolumeStore
from protos.wire.rules import IMAGE_ID_RE

# Capabilities Docker grants by default that a workload of this orchestrator has no
# business with: raw sockets (spoofing), device nodes, audit log writes, chroot
# escapes tooling, file capabilities.
NO_NEW_PRIVILEGES = "no-new-privileges:true"
PIDS_LIMIT = DEFAULT_PIDS  # the same bound as the process runtime's
TMP_MOUNT = f"rw,nosuid,nodev,size={TMP_BYTES},mode=1777"
LOW_PORTS_SYSCTL = "net.ipv4.ip_unprivileged_port_start"
LOG_MAX_SIZE = "10m"
LOG_MAX_FILES = "3"
MAX_STOP_TIMEOUT = 3600.0

__all__ = ["DockerRuntime", "engine_available", "node_hash"]


def _stop_seconds(timeout: float) -> int:
    if not isinstance(timeout, int | float) or not math.isfinite(timeout):
        raise InvalidArgument("timeout", "must be a finite number of seconds")
    if timeout < 0 or timeout > MAX_STOP_TIMEOUT:
        raise InvalidArgument("timeout", f"must be between 0 and {MAX_STOP_TIMEOUT:g} seconds")
    return math.ceil(timeout)  # Docker counts whole seconds; never cut a grace period short


def engine_available(timeout: float) -> bool:
    """True when the Docker Engine of the environment answers a ping within ``timeout``."""
    try:
        with docker_errors("docker engine"):
            client = docker.from_env(timeout=max(1, math.ceil(timeout)))
            try:
                return bool(client.ping())
            finally:
                client.close()
    except NodeError:
        return False


class DockerRuntime:
    """A ``Runtime`` backed by the Docker Engine, scoped to ``node_id``."""

    name = "docker"

    def __init__(
        self,
        node_id: str,
        state_dir: Path,
        *,
        client: docker.DockerClient | None = None,
        volumes: VolumeStore | None = None,
    ) -> None:
        if not isinstance(node_id, str) or not node_id or "\x00" in node_id:
            raise InvalidArgument("node_id", "must be a non-empty string")
        self.node_id = node_id
        self.state_dir = Path(state_dir)
        self.volumes = volumes if volumes is not None else VolumeStore.for_state_dir(state_dir)
        self._owns_client = client is None
        with docker_errors("docker engine"):
            self._client = client if client is not None else docker.from_env()
        self._api: Any = self._client.api
        if str(getattr(self._api, "base_url", "")).startswith("http+docker://"):
            # A local socket: no proxy or netrc applies, and looking them up in the
            # environment on every engine call costs a fifth of the client's CPU.
            self._api.trust_env = False
        self._prefix = f"capstan-{node_hash(node_id)}-"
        self._images = namespace(node_id)
        self._capacity: tuple[float, int] | None = None
        self._capacity_lock = threading.Lock()
        self._uids = TenantUids(self.state_dir)
        self._policy = load_policy(self.state_dir)
        # name -> (engine id, engine state, status): list() runs on every heartbeat and
        # re-inspects only containers whose id or state changed since it last looked
        # (one inspect per container per second loads the engine). Entries are dropped
        # whenever this agent acts on the container.
        self._listed: dict[str, tuple[str, str, ContainerStatus]] = {}
        # name -> engine id of a container this runtime created and has not started
        # yet: its first start needs no lookup (the id is ours by construction; an id
        # the engine no longer knows falls back to the lookup by name).
        self._created: dict[str, str] = {}

    # -- naming and lookup -------------------------------------------------------------

    def docker_name(self, name: str) -> str:
        return self._prefix + validate_name("name", name)

    def _lookup(self, name: str) -> dict[str, Any]:
        """Inspect one of this node's containers; anything else is NotFound."""
        docker_name = self.docker_name(name)
        with docker_errors(f"container {name!r}"):
            attrs: dict[str, Any] = self._api.inspect_container(docker_name)
        labels = labels_of(attrs)
        if labels.get(LABEL_NODE) != self.node_id or labels.get(LABEL_NAME) != name:
            # Same Docker name but not ours (a foreign or hand-made container): invisible.
            raise NotFound(f"container {name!r} not found on this node")
        return attrs

    def _capacity_limits(self) -> tuple[float, int]:
        if self._capacity is None:
            # One engine info call, however many creates arrive at once: it is slow on
            # a busy engine, and the first wave of a deploy would each make their own.
            with self._capacity_lock:
                if self._capacity is None:
                    info = self.info()
                    self._capacity = (info.cpus, info.memory)
        return self._capacity

    # -- lifecycle ---------------------------------------------------------------------

    def create(self, spec: ContainerSpec) -> ContainerStatus:
        cpus, memory = self._capacity_limits()
        validate_spec(spec, max_cpus=cpus, max_memory=memory or None)
        self._policy.check(spec)  # the node's own ceiling, whatever the token says
        missing = NotFound(f"image {spec.image!r} is not present on this node")
        # There is no registry to pull from: the image must have been imported. A plain
        # ref is checked by the create itself (the engine refuses a tag it lacks);
        # ids and digests are looked up first.
        if (IMAGE_ID_RE.fullmatch(spec.image) or "@" in spec.image) and not self.image_exists(
            spec.image
        ):
            raise missing
        image = node_ref(self._images, spec.image)
        uid, gid = self._user(spec)
        mounts = []
        for mount in spec.volumes:
            source = self.volumes.ensure(mount.name)
            if not mount.read_only:
                self.volumes.own(mount.name, uid, gid)  # writable by the instance's uid
            mounts.append(
                docker.types.Mount(
                    target=mount.path, source=str(source), type="bind", read_only=mount.read_only
                )
            )
        # Secret files: a memory-backed directory of the agent's, read-only inside.
        mounts.extend(
            docker.types.Mount(target=m.path, source=m.source, type="bind", read_only=True)
            for m in spec.secrets
        )
        # Ours last: they cannot be overridden by the spec's own labels.
        labels = dict(spec.labels)
        labels.update(
            {
                LABEL_NODE: self.node_id,
                LABEL_WORKLOAD: spec.workload_id,
                LABEL_NAME: spec.name,
                LABEL_IMAGE: spec.image,
                LABEL_NET: json.dumps(
                    net_to_json(spec.service, spec.ports, spec.links),
                    sort_keys=True,
                    separators=(",", ":"),
                ),
            }
        )
        # Per network namespace: only an instance's own loopback is concerned. (On the
        # host's network a low port is the host's: that takes NET_BIND_SERVICE.)
        sysctls = {LOW_PORTS_SYSCTL: "0"} if spec.low_ports and spec.network == "none" else None
        with docker_errors(f"container {spec.name!r}", field="spec"):
            host_config = self._api.create_host_config(
                network_mode=spec.network,
                # A linked service's name resolves to its loopback address inside the
                # container, where the node agent listens (node/links).
                extra_hosts={link.service: link.address for link in spec.links} or None,
                nano_cpus=round(spec.cpu * 1e9) if spec.cpu else None,
                mem_limit=spec.memory or None,
                # Same as the memory limit: no swap beyond it.
                memswap_limit=spec.memory or None,
                mounts=mounts,
                # The sandbox's defaults (docs/sandbox.md): read-only root with a small
                # /tmp, every capability dropped but what the pool granted, no new
                # privileges, a seccomp profile named by content, a PIDs limit, no
                # devices, and the engine's private IPC and PID namespaces.
                read_only=True,
                tmpfs={"/tmp": TMP_MOUNT},  # noqa: S108 - the container's own /tmp
                cap_drop=["ALL"],
                cap_add=_capabilities(spec) or None,
                security_opt=[NO_NEW_PRIVILEGES, "seccomp=" + profile_text(spec.seccomp)],
                privileged=False,
                pids_limit=PIDS_LIMIT,
                ipc_mode="private",
                devices=[],
                sysctls=sysctls,
                log_config=docker.types.LogConfig(
                    type="json-file", config={"max-size": LOG_MAX_SIZE, "max-file": LOG_MAX_FILES}
                ),
            )
            try:
                created = self._api.create_container(
                    image=image,
                    user=f"{uid}:{gid}",
                    command=list(spec.command) or None,
                    name=self.docker_name(spec.name),
                    environment=[f"{key}={value}" for key, value in spec.env],
                    labels=labels,
                    host_config=host_config,
                    detach=True,
                )
            except docker.errors.ImageNotFound:
                raise missing from None
        cid = str(created.get("Id", ""))
        if cid:
            self._created[spec.name] = cid
        # What an inspect would say of a container just created (no engine call: the
        # engine is busiest exactly when many are being created).
        return ContainerStatus(
            name=spec.name,
            workload_id=spec.workload_id,
            image=spec.image,
            state=ContainerState.CREATED,
            runtime_id=cid,
        )

    def secret_owner(self, spec: ContainerSpec) -> tuple[int, int]:
        # The user the instance runs as: the files are that user's alone.
        return self._user(spec)

    def net_spec(self, name: str) -> NetSpec | None:
        attrs = self._lookup(name)
        state = attrs.get("State") or {}
        pid = int(state.get("Pid") or 0)
        if not state.get("Running") or pid <= 0:
            return None
        try:
            doc = json.loads(labels_of(attrs).get(LABEL_NET) or "{}")
            service, ports, links = net_from_json(doc)
        except (ValueError, KeyError, TypeError):
            raise RuntimeFailure(f"container {name!r} has a malformed {LABEL_NET} label") from None
        mode = str((attrs.get("HostConfig") or {}).get("NetworkMode", ""))
        return NetSpec(
            netns=f"/proc/{pid}/ns/net",
            isolated=mode != "host",
            service=service,
            ports=ports,
            links=links,
        )

    def _user(self, spec: ContainerSpec) -> tuple[int, int]:
        """The spec's ``user``, else its tenant's own non-root uid (never the image's)."""
        given = validate_user("user", spec.user)
        if given is not None:
            return given
        uid = self._uids.uid_for(tenant_of(spec.workload_id))
        return uid, uid

    def exec(
        self, name: str, command: Sequence[str], *, tty: bool = False, stdin: bool = False
    ) -> SocketExec:
        attrs = self._lookup(name)
        if not (attrs.get("State") or {}).get("Running"):
            raise FailedPrecondition(f"container {name!r} is not running")
        if not command:
            raise InvalidArgument("command", "empty")
        subject = f"container {name!r}"
        with docker_errors(subject):
            # The container's own user, environment and confinement: exec adds no privilege.
            exec_id = self._api.exec_create(
                attrs["Id"],
                list(command),
                stdin=stdin,
                tty=tty,
                stdout=True,
                stderr=True,
                privileged=False,
            )["Id"]
            attached = self._api.exec_start(exec_id, socket=True, tty=tty)
        raw = getattr(attached, "_sock", attached)

        def inspect() -> dict[str, Any]:
            with docker_errors(subject):
                state: dict[str, Any] = self._api.exec_inspect(exec_id)
            return state

        return SocketExec(raw, tty=tty, inspect=inspect, close=attached.close)

    def start(self, name: str) -> ContainerStatus:
        self._listed.pop(name, None)
        cid = self._created.pop(validate_name("name", name), None)
        started = False
        if cid is not None:
            try:
                with docker_errors(f"container {name!r}"):
                    self._api.start(cid)
                started = True
            except NotFound:
                pass  # removed meanwhile: whatever holds the name now is looked up
        if not started:
            cid = self._lookup(name)["Id"]
            with docker_errors(f"container {name!r}"):
                self._api.start(cid)
        return self.inspect(name)

    def stop(self, name: str, timeout: float = 10.0) -> ContainerStatus:
        seconds = _stop_seconds(timeout)
        self._listed.pop(name, None)
        cid = self._lookup(name)["Id"]
        with docker_errors(f"container {name!r}"):
            self._api.stop(cid, timeout=seconds)
        return self.inspect(name)

    def restart(self, name: str, timeout: float = 10.0) -> ContainerStatus:
        seconds = _stop_seconds(timeout)
        self._listed.pop(name, None)
        cid = self._lookup(name)["Id"]
        with docker_errors(f"container {name!r}"):
            self._api.restart(cid, timeout=seconds)
        return self.inspect(name)

    def remove(self, name: str, force: bool = False) -> None:
        self._listed.pop(name, None)
        self._created.pop(name, None)
        cid = self._lookup(name)["Id"]
        with docker_errors(f"container {name!r}"):
            # Volumes belong to the node's store, never to the container: v=False.
            self._api.remove_container(cid, force=bool(force), v=False)

    # -- observation -------------------------------------------------------------------

    def inspect(self, name: str) -> ContainerStatus:
        return status_from_inspect(self._lookup(name))

    def list(self) -> builtins.list[ContainerStatus]:
        with docker_errors("containers"):
            summaries = self._api.containers(
                all=True, filters={"label": [f"{LABEL_NODE}={self.node_id}"]}
            )
        out: builtins.list[ContainerStatus] = []
        seen: set[str] = set()
        for summary in summaries:
            labels = summary.get("Labels") or {}
            name = labels.get(LABEL_NAME, "")
            if labels.get(LABEL_NODE) != self.node_id:
                continue
            cid, state = str(summary.get("Id", "")), str(summary.get("State", ""))
            cached = self._listed.get(name)
            if cached is not None and cached[0] == cid and cached[1] == state:
                out.append(cached[2])
                seen.add(name)
                continue
            try:
                status = self.inspect(name)
            except (NotFound, InvalidArgument):
                continue  # removed meanwhile, or not a container this agent made
            self._listed[name] = (cid, state, status)
            seen.add(name)
            out.append(status)
        for gone in set(self._listed) - seen:
            self._listed.pop(gone, None)
        return sorted(out, key=lambda status: status.name)

    def logs(self, name: str, *, follow: bool = False, tail: int = 0) -> Iterator[bytes]:
        """stdout and stderr as they come; ``tail`` 0 means everything, N the last N lines."""
        if isinstance(tail, bool) or not isinstance(tail, int) or tail < 0:
            raise InvalidArgument("tail", "must be a non-negative integer")
        cid = self._lookup(name)["Id"]
        subject = f"container {name!r}"
        with docker_errors(subject):
            stream = self._api.logs(
                cid,
                stdout=True,
                stderr=True,
                stream=True,
                follow=bool(follow),
                tail=tail if tail > 0 else "all",
            )
        return mapped_stream(stream, subject)

    def stats(self, name: str) -> ContainerStats:
        attrs = self._lookup(name)
        with docker_errors(f"container {name!r}"):
            # stream=False: Docker takes two readings about a second apart and returns
            # the second with the first as precpu_stats.
            sample = self._api.stats(attrs["Id"], stream=False)
        limit = int((attrs.get("HostConfig") or {}).get("Memory") or 0)
        return stats_from_sample(name, sample, limit)

    # -- images ------------------------------------------------------------------------

    def node_image(self, ref: str) -> str:
        """The engine tag that holds image ``ref`` for this node (``capstan-<hash>/...``)."""
        return node_ref(self._images, _plain_ref(ref))

    def _node_tags(self) -> builtins.list[tuple[str, str]]:
        """``(node-scoped tag, image id)`` of every image this node has."""
        with docker_errors("images"):
            summaries = self._api.images()
        return [
            (tag, str(summary.get("Id", "")))
            for summary in summaries
            for tag in summary.get("RepoTags") or ()
            if isinstance(tag, str) and tag.startswith(self._images)
        ]

    def images(self) -> builtins.list[str]:
        """The refs this node has, each with its tag (``busybox`` is ``busybox:latest``)."""
        refs = {ref_of(self._images, tag) for tag, _ in self._node_tags()}
        return sorted(ref for ref in refs if ref is not None)

    def image_ids(self) -> dict[str, str]:
        """``{ref: image id}`` of this node's images, from one engine call."""
        out: dict[str, str] = {}
        for tag, image_id in self._node_tags():
            ref = ref_of(self._images, tag)
            if ref is not None:
                out[ref] = image_id
        return out

    def image_exists(self, ref: str) -> bool:
        validate_image_ref("ref", ref, allow_id=True)
        if IMAGE_ID_RE.fullmatch(ref):
            return any(image_id == ref for _, image_id in self._node_tags())
        if "@" in ref:
            return False  # digests come from registries, and there is none
        try:
            with docker_errors(f"image {ref!r}", field="ref"):
                self._api.inspect_image(node_ref(self._images, ref))
        except NotFound:
            return False
        return True

    def image_export(self, ref: str) -> Iterator[bytes]:
        """``docker save`` of one image as a byte stream, its archive naming ``ref`` alone
        (an image id exports untagged)."""
        if not self.image_exists(ref):
            raise NotFound(f"image {ref!r} not found on this node")
        subject = f"image {ref!r}"
        if IMAGE_ID_RE.fullmatch(ref):
            with docker_errors(subject, field="ref"):
                stream = self._api.get_image(ref, chunk_size=CHUNK)
            return mapped_stream(stream, subject)
        # Saved under the node's own tag, which only this node moves: another agent
        # retagging the global ``ref`` meanwhile cannot change what is exported.
        with docker_errors(subject, field="ref"):
            stream = self._api.get_image(node_ref(self._images, ref), chunk_size=CHUNK)
        return retag_export(mapped_stream(stream, subject), ref)

    def image_import(self, chunks: Iterable[bytes]) -> builtins.list[str]:
        """``docker load`` from a byte stream, sent on as it arrives; the refs loaded, each
        with its tag. Every image must be named; nothing is tagged unless all load."""
        archive = ImportedArchive(chunks)
        stream = archive.stream()
        # The first chunk is read before the engine is called, so that what is not a
        # tar archive at all is refused without an upload.
        first = next(stream, b"")
        with docker_errors("image archive", field="data"):
            for message in self._api.load_image(itertools.chain([first], stream), quiet=True):
                if "errorDetail" in message or "error" in message:
                    detail = message.get("errorDetail") or {}
                    text = detail.get("message") or message.get("error") or "load failed"
                    raise InvalidArgument("data", f"docker load refused the archive: {text}")
        # Every name is checked before the first tag: a refused archive tags nothing.
        plan: dict[str, str] = {}  # ref -> image id
        for image_id, names in archive.images():
            if not names:
                raise InvalidArgument("data", "the archive holds an image without a name")
            for name in names:
                validate_image_ref("data", name)
                if "@" in name:
                    raise InvalidArgument("data", f"{name[:80]!r}: an image is named by a digest")
                try:
                    node_ref(self._images, name)
                except InvalidArgument as exc:
                    raise InvalidArgument("data", exc.message) from None
                plan[_with_tag(name)] = image_id
        if not plan:
            raise InvalidArgument("data", "the archive held no image")
        for image_id in set(plan.values()):
            try:
                with docker_errors(f"image {image_id}"):
                    self._api.inspect_image(image_id)
            except NotFound:
                raise RuntimeFailure(
                    f"docker load did not produce image {image_id} of the archive"
                ) from None
        with docker_errors("image archive", field="data"):
            for ref, image_id in plan.items():
                self._tag(image_id, ref)
        return builtins.list(plan)

    def adopt_image(self, ref: str) -> str:
        """Give this node the image the engine itself tags ``ref`` (seeding a node with
        an image built or loaded outside Capstan); returns ``ref``."""
        _plain_ref(ref)
        with docker_errors(f"image {ref!r} on the engine", field="ref"):
            image_id = str(self._api.inspect_image(ref)["Id"])
            self._tag(image_id, ref)
        return ref

    def forget_images(self) -> builtins.list[str]:
        """Remove every image tag of this node from the engine (a node being retired);
        the refs forgotten. Images other tags or containers still use stay."""
        forgotten: builtins.list[str] = []
        for tag, _ in self._node_tags():
            with docker_errors(f"image {tag!r}"):
                # force: untag even while a container uses the image (it then stays,
                # untagged); an image without tags or containers left is deleted.
                self._api.remove_image(tag, force=True, noprune=True)
            ref = ref_of(self._images, tag)
            if ref is not None:
                forgotten.append(ref)
        return sorted(forgotten)

    def _tag(self, image_id: str, ref: str) -> None:
        repository, tag = node_ref(self._images, ref).rsplit(":", 1)
        if not self._api.tag(image_id, repository, tag, force=True):
            raise RuntimeFailure(f"docker refused to tag {image_id} as {repository}:{tag}")

    # -- engine ------------------------------------------------------------------------

    def info(self) -> RuntimeInfo:
        with docker_errors("docker engine"):
            info = self._api.info()
            version = self._api.version()
        return RuntimeInfo(
            runtime="docker",
            version=str(info.get("ServerVersion", "")),
            cpus=float(info.get("NCPU") or 0),
            memory=int(info.get("MemTotal") or 0),
            extra={
                "api_version": str(version.get("ApiVersion", "")),
                "cgroup_version": str(info.get("CgroupVersion", "")),
                "storage_driver": str(info.get("Driver", "")),
                "kernel": str(info.get("KernelVersion", "")),
            },
        )

    def close(self) -> None:
        if self._owns_client:
            with docker_errors("docker engine"):
                self._client.close()


def _capabilities(spec: ContainerSpec) -> list[str]:
    """What is given back: the spec's own, and on the host's network the one a low
    port takes (elsewhere a sysctl of the container's own namespace does it)."""
    caps = list(spec.cap_add)
    if spec.low_ports and spec.network == "host" and "NET_BIND_SERVICE" not in caps:
        caps.append("NET_BIND_SERVICE")
    return caps


def _plain_ref(ref: str) -> str:
    """A reference that can name a node's image: no bare id, no digest."""
    validate_image_ref("ref", ref)
    if "@" in ref:
        raise InvalidArgument("ref", "digest references need a registry; none exists here")
    return ref


def _with_tag(ref: str) -> str:
    name, tag = split_ref(ref)
    return f"{name}:{tag}"
