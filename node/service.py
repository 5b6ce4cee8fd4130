"""NodeService handlers: map protobuf to the runtime and volume store and back.

Authorization has already happened in the interceptor (node/authz.py) when a handler
runs. Node errors become gRPC statuses at one boundary (``_status_of``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import logging
import os
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import grpc

from node import errors, pinned
from node._generations import GenerationBook
from node.links import LinkManager, LinkRefused
from node.runtime.base import (
    ContainerSpec,
    ContainerStatus,
    LinkSpec,
    PortSpec,
    Runtime,
    VolumeMount,
)
from node.secretfiles import SecretFiles
from node.validation import check_owner, validate_spec
from node.volumes import VolumeStore, digest_checked
from pki.errors import CapstanError
from pki.peers import Peer
from protos import node_pb2, node_pb2_grpc

log = logging.getLogger("capstan.node")

CHUNK = 256 * 1024
MAX_IMAGE_BYTES = 2 * 1024**3
MAX_VOLUME_BYTES = 1024**3

_STATUS: tuple[tuple[type[Exception], grpc.StatusCode], ...] = (
    (errors.InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT),
    (errors.NotFound, grpc.StatusCode.NOT_FOUND),
    (errors.AlreadyExists, grpc.StatusCode.ALREADY_EXISTS),
    (errors.FailedPrecondition, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.NotOwned, grpc.StatusCode.PERMISSION_DENIED),
    (errors.PolicyDenied, grpc.StatusCode.PERMISSION_DENIED),
    (errors.RuntimeUnavailable, grpc.StatusCode.UNAVAILABLE),
)

F = TypeVar("F", bound=Callable[..., Any])


def _status_of(exc: CapstanError) -> grpc.StatusCode:
    for cls, code in _STATUS:
        if isinstance(exc, cls):
            return code
    return grpc.StatusCode.INTERNAL


def _boundary(fn: F) -> F:
    @functools.wraps(fn)
    def unary(self: NodeServicer, request: Any, context: grpc.ServicerContext) -> Any:
        try:
            return fn(self, request, context)
        except CapstanError as exc:
            log.info("%s failed: %s", fn.__name__, exc)
            context.abort(_status_of(exc), str(exc))

    return unary  # type: ignore[return-value]


def _stream_boundary(fn: F) -> F:
    @functools.wraps(fn)
    def stream(self: NodeServicer, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        try:
            yield from fn(self, request, context)
        except CapstanError as exc:
            log.info("%s failed: %s", fn.__name__, exc)
            context.abort(_status_of(exc), str(exc))

    return stream  # type: ignore[return-value]


def status_to_pb(s: ContainerStatus) -> node_pb2.ContainerStatus:
    return node_pb2.ContainerStatus(
        name=s.name,
        workload_id=s.workload_id,
        image=s.image,
        state=str(s.state),
        runtime_id=s.runtime_id,
        has_exit_code=s.exit_code is not None,
        exit_code=s.exit_code or 0,
        started_at=s.started_at or 0.0,
        finished_at=s.finished_at or 0.0,
    )


def spec_from_pb(pb: node_pb2.ContainerSpec) -> ContainerSpec:
    return ContainerSpec(
        name=pb.name,
        workload_id=pb.workload_id,
        image=pb.image,
        command=tuple(pb.command),
        env=tuple((e.name, e.value) for e in pb.env),
        cpu=pb.cpu,
        memory=pb.memory,
        volumes=tuple(VolumeMount(v.name, v.path, v.read_only) for v in pb.volumes),
        network=pb.network or "none",
        service=pb.service,
        ports=tuple(PortSpec(p.port, p.publish) for p in pb.ports),
        links=tuple(LinkSpec(x.service, x.address, tuple(x.ports), x.target) for x in pb.links),
        user=pb.user,
        seccomp=pb.seccomp,
        cap_add=tuple(pb.cap_add),
        low_ports=pb.low_ports,
    )


def _chunks(data: Iterable[bytes]) -> Iterator[node_pb2.DataChunk]:
    for chunk in data:
        for i in range(0, len(chunk), CHUNK):
            yield node_pb2.DataChunk(data=chunk[i : i + CHUNK])


def _image_tags(path: Path) -> set[str]:
    """The tags a docker-save archive would apply when loaded."""
    import tarfile  # here: an image import is rare; an idle agent need not hold tarfile

    try:
        with tarfile.open(path, "r:") as tar:
            member = tar.getmember("manifest.json")
            fh = tar.extractfile(member)
            if fh is None:
                raise errors.InvalidArgument("data", "manifest.json is not a file")
            manifest = json.loads(fh.read(1024 * 1024))
    except KeyError:
        raise errors.InvalidArgument("data", "image archive has no manifest.json") from None
    except (tarfile.TarError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise errors.InvalidArgument("data", f"not an image archive: {exc}") from None
    if not isinstance(manifest, list):
        raise errors.InvalidArgument("data", "manifest.json is not a list")
    tags: set[str] = set()
    for entry in manifest:
        repo_tags = entry.get("RepoTags") if isinstance(entry, dict) else None
        tags.update(t for t in repo_tags or () if isinstance(t, str))
    return tags


def import_image_checked(
    runtime: Runtime,
    ref: str,
    chunks: Iterable[bytes],
    spool_dir: Path,
    *,
    max_bytes: int = MAX_IMAGE_BYTES,
) -> list[str]:
    """Load a docker-save archive into ``runtime`` only if it tags exactly ``ref``.

    The archive is spooled to ``spool_dir`` and checked before anything is loaded: an
    archive naming other tags could otherwise overwrite other images on this node. A
    pinned ``ref`` (``name@sha256:...``) loads only an archive of exactly that content
    (``node.pinned.verify_archive``), tagged ``name``.
    Used by ImportImage (a push from the orchestrator) and by delegated fetches.
    """
    pinned_ref = ref
    ref, digest = pinned.split(ref)
    try:
        spool_dir.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=spool_dir, prefix="image-", suffix=".tar")
    except OSError as exc:
        raise errors.RuntimeFailure(f"image spool {spool_dir}: {exc.strerror}") from None
    path = Path(name)
    try:
        size = 0
        try:
            with os.fdopen(fd, "wb") as fh:
                for chunk in chunks:
                    size += len(chunk)
                    if size > max_bytes:
                        raise errors.InvalidArgument("data", f"image larger than {max_bytes} bytes")
                    fh.write(chunk)
        except OSError as exc:
            raise errors.RuntimeFailure(f"image spool {spool_dir}: {exc.strerror}") from None
        tags = _image_tags(path)
        # A pinned image may come named by its content tag (what a fetching node keeps).
        allowed = [{ref}] if digest is None else [{ref}, {pinned.content_ref(pinned_ref)}]
        if tags not in allowed:
            raise errors.InvalidArgument(
                "data", f"archive tags {sorted(tags)} but the import is for {ref!r}"
            )
        if digest is None:
            return runtime.image_import(_read_chunks(path))
        pinned.verify_archive(path, digest)
        from node.runtime._docker_archive import retag_export  # rare; see _image_tags

        # Loaded under its content tag only: the plain name, which another tenant's
        # pin may use for other content, is never moved.
        return runtime.image_import(
            retag_export(_read_chunks(path), pinned.content_ref(pinned_ref))
        )
    finally:
        path.unlink(missing_ok=True)


class NodeServicer(node_pb2_grpc.NodeServiceServicer):  # type: ignore[misc]
    def __init__(
        self,
        *,
        node_id: str,
        runtime: Runtime,
        volumes: VolumeStore,
        spool_dir: Path,
        labels: dict[str, str] | None = None,
        version: str | Callable[[], str] = "",
        links: LinkManager | None = None,
        peer_of: Callable[[Any], Peer] | None = None,
        secrets: SecretFiles | None = None,
    ) -> None:
        self._secrets = secrets
        self._links = links
        self._peer_of = peer_of
        self._node_id = node_id
        self._runtime = runtime
        self._volumes = volumes
        self._spool = spool_dir
        self._labels = labels or {}
        self._version = version
        self._generations = GenerationBook(self._holds)

    def _holds(self, name: str) -> bool:
        try:
            self._runtime.inspect(name)
        except errors.NotFound:
            return False
        return True

    @_boundary
    def CreateContainer(
        self, request: node_pb2.ContainerSpec, context: Any
    ) -> node_pb2.ContainerStatus:
        spec = spec_from_pb(request)
        validate_spec(spec)
        check_owner(spec)
        spec = pinned.runnable(self._runtime, spec)
        self._generations.check(spec.name, spec.workload_id, request.generation)
        for mount in spec.volumes:
            self._volumes.ensure(mount.name)
        if request.secrets:
            spec = self._with_secrets(spec, request.secrets)
        try:
            created = status_to_pb(self._runtime.create(spec))
        except BaseException:
            if request.secrets and self._secrets is not None and not self._holds(spec.name):
                self._secrets.remove(spec.name)
            raise
        finally:
            if request.secrets and self._secrets is not None:
                self._secrets.created(spec.name)
        self._generations.record(spec.name, spec.workload_id, request.generation)
        return created

    @_boundary
    def UpdateSecrets(
        self, request: node_pb2.SecretUpdate, context: Any
    ) -> node_pb2.ContainerStatus:
        if self._secrets is None:
            raise errors.FailedPrecondition("this node holds no seal key: it cannot take secrets")
        current = self._runtime.inspect(request.name)  # NotFound unless it runs here
        self._secrets.update(request.name, request.secrets)
        return status_to_pb(current)

    def _with_secrets(
        self, spec: ContainerSpec, sealed: Sequence[node_pb2.SealedSecret]
    ) -> ContainerSpec:
        """The spec with its secrets opened into memory-backed files (and env, where the
        topology asked for it); refused whole when one does not open."""
        if self._secrets is None:
            raise errors.FailedPrecondition("this node holds no seal key: it cannot take secrets")
        if self._holds(spec.name):
            raise errors.AlreadyExists(f"container {spec.name!r} already exists")
        uid, gid = self._runtime.secret_owner(spec)
        mounts, env = self._secrets.open(spec.name, sealed, uid, gid)
        return dataclasses.replace(spec, secrets=mounts, env=(*spec.env, *env))

    @_boundary
    def StartContainer(
        self, request: node_pb2.ContainerRef, context: Any
    ) -> node_pb2.ContainerStatus:
        self._generations.check_start(request.name)
        return status_to_pb(self._runtime.start(request.name))

    @_boundary
    def StopContainer(
        self, request: node_pb2.StopRequest, context: Any
    ) -> node_pb2.ContainerStatus:
        return status_to_pb(self._runtime.stop(request.name, _timeout(request.timeout)))

    @_boundary
    def RestartContainer(
        self, request: node_pb2.StopRequest, context: Any
    ) -> node_pb2.ContainerStatus:
        return status_to_pb(self._runtime.restart(request.name, _timeout(request.timeout)))

    @_boundary
    def RemoveContainer(
        self, request: node_pb2.RemoveRequest, context: Any
    ) -> node_pb2.ContainerStatus:
        last = self._runtime.inspect(request.name)
        self._runtime.remove(request.name, force=request.force)
        if self._secrets is not None:
            self._secrets.remove(request.name)  # the instance left: so do its secrets
        self._generations.forget(request.name)
        return status_to_pb(last)

    @_boundary
    def InspectContainer(
        self, request: node_pb2.ContainerRef, context: Any
    ) -> node_pb2.ContainerStatus:
        return status_to_pb(self._runtime.inspect(request.name))

    @_boundary
    def ListContainers(self, request: node_pb2.ListRequest, context: Any) -> node_pb2.ContainerList:
        return node_pb2.ContainerList(containers=[status_to_pb(s) for s in self._runtime.list()])

    @_stream_boundary
    def ContainerLogs(
        self, request: node_pb2.LogsRequest, context: Any
    ) -> Iterator[node_pb2.LogChunk]:
        if request.tail < 0:
            raise errors.InvalidArgument("tail", "must be >= 0")
        chunks = self._runtime.logs(request.name, follow=request.follow, tail=request.tail)
        # A call ended from outside (its grant is over, the caller left) must free this
        # thread even while the runtime waits for output: closing the runtime's stream
        # wakes a blocked read; a polling one yields b"" and sees the call inactive.
        context.add_callback(functools.partial(_close_quietly, chunks))
        for chunk in chunks:
            if not context.is_active():
                return
            if chunk:
                yield node_pb2.LogChunk(data=chunk)

    @_boundary
    def GetContainerStats(
        self, request: node_pb2.ContainerRef, context: Any
    ) -> node_pb2.ContainerStats:
        s = self._runtime.stats(request.name)
        return node_pb2.ContainerStats(
            name=s.name,
            cpu_seconds=s.cpu_seconds,
            cpu_fraction=s.cpu_fraction,
            memory_bytes=s.memory_bytes,
            memory_limit=s.memory_limit,
        )

    @_stream_boundary
    def ExportImage(self, request: node_pb2.ImageRef, context: Any) -> Iterator[node_pb2.DataChunk]:
        ref = pinned.require_local(self._runtime, request.ref)  # a pin: only that content
        if not self._runtime.image_exists(ref):
            raise errors.NotFound(f"image {request.ref} not found")
        yield from _chunks(self._runtime.image_export(ref))

    @_boundary
    def ImportImage(
        self, request_iterator: Iterator[node_pb2.ImageImportChunk], context: Any
    ) -> Any:
        ref, data = _named_upload(request_iterator, "ref")
        refs = import_image_checked(self._runtime, ref, data, self._spool)
        return node_pb2.ImageImportResult(refs=refs)

    @_stream_boundary
    def ExportVolume(
        self, request: node_pb2.VolumeRef, context: Any
    ) -> Iterator[node_pb2.DataChunk]:
        if not self._volumes.exists(request.name):
            raise errors.NotFound(f"volume {request.name} not found")
        digest = hashlib.sha256()
        for chunk in _chunks(self._volumes.export(request.name)):
            digest.update(chunk.data)
            yield chunk
        # The receiver replaces its copy only when every byte it got matches this.
        yield node_pb2.DataChunk(digest="sha256:" + digest.hexdigest())

    @_boundary
    def ImportVolume(
        self, request_iterator: Iterator[node_pb2.VolumeImportChunk], context: Any
    ) -> Any:
        name, messages = _named_messages(request_iterator, "name")
        data = digest_checked(messages, required=False)
        result = self._volumes.import_(name, data, max_bytes=MAX_VOLUME_BYTES)
        return node_pb2.VolumeImportResult(name=name, bytes=result.bytes, files=result.files)

    @_boundary
    def Tunnel(
        self, request_iterator: Iterator[node_pb2.TunnelFrame], context: Any
    ) -> Iterator[node_pb2.TunnelFrame]:
        """A delegated link's tunnel; the interceptor has checked the token against the
        first frame's res. Everything else is the data plane's (node/links)."""
        if self._links is None or self._peer_of is None:
            context.abort(grpc.StatusCode.UNIMPLEMENTED, "this node carries no links")
            return
        peer = self._peer_of(context)
        try:
            yield from self._links.serve_tunnel(peer, request_iterator, context)
        except LinkRefused as exc:
            context.abort(exc.code, exc.reason)

    @_stream_boundary
    def ExecContainer(
        self, request_iterator: Iterator[node_pb2.ExecInput], context: Any
    ) -> Iterator[node_pb2.ExecOutput]:
        """A user's command in a container. The interceptor has checked the token
        against the first message (container and exact command line) and holds the
        call by the token's grant: when it ends, the call is cancelled, the callback
        below kills the command, and this thread returns."""
        first = next(request_iterator)
        start = first.start
        if first.stdin or first.close_stdin:
            raise errors.InvalidArgument("start", "the first message carries only start")
        if not start.command:
            raise errors.InvalidArgument("start.command", "empty")
        session = self._runtime.exec(
            start.name, list(start.command), tty=start.tty, stdin=start.stdin
        )
        context.add_callback(session.kill)
        log.info("exec in %s: %s", start.name, " ".join(start.command)[:512])
        if start.stdin:
            pump = threading.Thread(
                target=_pump_input,
                args=(request_iterator, session),
                daemon=True,
                name=f"exec-input-{start.name}",
            )
            pump.start()
        try:
            for stream, data in session.output():
                if not context.is_active():
                    return
                if stream == 2:
                    yield node_pb2.ExecOutput(stderr=data)
                else:
                    yield node_pb2.ExecOutput(stdout=data)
            code = session.wait()
        finally:
            if not context.is_active():
                session.kill()
        yield node_pb2.ExecOutput(exited=True, exit_code=code)

    def GetNodeInfo(self, request: node_pb2.NodeInfoRequest, context: Any) -> node_pb2.NodeInfo:
        info = self._runtime.info()
        return node_pb2.NodeInfo(
            node_id=self._node_id,
            runtime=info.runtime,
            runtime_version=info.version,
            capstan_version=self._version if isinstance(self._version, str) else self._version(),
            cpus=info.cpus,
            memory=info.memory,
            containers=len(self._runtime.list()),
            labels=self._labels,
        )


def _pump_input(messages: Iterator[node_pb2.ExecInput], session: Any) -> None:
    """The caller's input to the command, until it closes stdin or the call ends."""
    try:
        for message in messages:
            if message.HasField("start"):
                break  # one start per call: a second one is ignored, and input ends
            if message.stdin:
                session.write(message.stdin)
            if message.close_stdin:
                break
    except grpc.RpcError:
        pass
    session.close_stdin()


def _named_upload(messages: Iterable[Any], field: str) -> tuple[str, Iterator[bytes]]:
    """A client stream whose first message names the object (the token's res) and
    whose messages carry data; a later message may repeat the name, never change it."""
    name, stream = _named_messages(messages, field)
    return name, (msg.data for msg in stream)


def _named_messages(messages: Iterable[Any], field: str) -> tuple[str, Iterator[Any]]:
    stream = iter(messages)
    first = next(stream, None)
    if first is None:
        raise errors.InvalidArgument(field, "empty upload stream")
    name: str = getattr(first, field)

    def checked() -> Iterator[Any]:
        yield first
        for msg in stream:
            if getattr(msg, field) not in ("", name):
                raise errors.InvalidArgument(field, "changes within the stream")
            yield msg

    return name, checked()


def _timeout(value: float) -> float:
    if not 0 <= value <= 3600:  # NaN fails both comparisons
        raise errors.InvalidArgument("timeout", "must be between 0 and 3600 seconds")
    return value or 10.0


def _read_chunks(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            yield chunk


def _close_quietly(chunks: Iterator[bytes]) -> None:
    close = getattr(chunks, "close", None)
    if callable(close):
        # A generator running in another thread refuses: it stops at its next poll.
        with contextlib.suppress(ValueError, RuntimeError):
            close()
