"""Tasks the orchestrator gives this node: delegated fetches from a peer node.

A task arrives down the Report stream with a request id and, for a fetch, a token
minted for this node's certificate and the one source node (``sub`` = this node,
``aud`` = the source, ``op`` = the export, ``res`` = the one image or volume). It is
the only way a node ever calls another node. The runner:

- ignores a request id it has already taken (the orchestrator may resend);
- completes an expired task as failed without calling the source;
- calls the source over a channel whose handshake accepts only ``source_id``
  (protos.wire.channel.expecting), so a node answering at another node's address
  never receives the token; uses the token once, over mTLS with the node's own
  current certificate;
- loads an image only through the same tag check as ImportImage, and a volume only
  through the volume store's all-or-nothing import;
- reports the outcome with ``NodeGateway.Complete``, retried while the gateway is
  unreachable and never after a refusal.

Tokens are never logged: no log line or completion message holds a Task message.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import grpc

from node import pinned
from node.errors import InvalidArgument
from node.runtime.base import Runtime
from node.service import MAX_IMAGE_BYTES, MAX_VOLUME_BYTES, import_image_checked
from node.volumes import VolumeStore, digest_checked
from pki.errors import CapstanError
from protos import gateway_pb2, gateway_pb2_grpc, node_pb2
from protos.wire.errors import status_of
from protos.wire.nodeclient import NodeClient
from protos.wire.tasks import IMAGE_FETCH, KINDS

log = logging.getLogger("capstan.node.tasks")

__all__ = [
    "TaskOutcome",
    "TaskRunner",
]

MAX_MESSAGE = 500  # characters of a completion message
_REMEMBERED_IDS = 4096
_MAX_FIELD = 512


@dataclass(frozen=True)
class TaskOutcome:
    """What became of one task (for operators and tests; never holds the token)."""

    request_id: str
    kind: str
    resource: str
    ok: bool
    message: str
    completed: bool  # the orchestrator acknowledged the completion


class TaskRunner:
    """Runs tasks on a small pool of worker threads; see the module docstring.

    ``own_credentials`` returns mTLS credentials from the node's current certificate
    (read again for every task, so a renewed certificate is used); ``gateway_channel``
    returns a new channel to the orchestrator's NodeGateway, closed after each
    completion. ``on_image`` runs after an image was loaded (the
    agent makes the reporter tell the orchestrator at once).
    """

    def __init__(
        self,
        runtime: Runtime,
        volumes: VolumeStore,
        *,
        own_credentials: Callable[[], grpc.ChannelCredentials],
        gateway_channel: Callable[[], grpc.Channel],
        node_id: str,
        spool_dir: Path,
        on_image: Callable[[], None] = lambda: None,
        clock: Callable[[], float] = time.time,
        workers: int = 2,
        fetch_timeout: float = 300.0,
        complete_attempts: int = 4,
        retry_delay: float = 0.5,
        max_image_bytes: int = MAX_IMAGE_BYTES,
        max_volume_bytes: int = MAX_VOLUME_BYTES,
    ) -> None:
        if workers < 1 or complete_attempts < 1:
            raise ValueError("workers and complete_attempts must be at least 1")
        self._runtime = runtime
        self._volumes = volumes
        self._credentials = own_credentials
        self._gateway = gateway_channel
        self._node_id = node_id
        self._spool = Path(spool_dir)
        self._on_image = on_image
        self._clock = clock
        self._fetch_timeout = fetch_timeout
        self._attempts = complete_attempts
        self._retry_delay = retry_delay
        self._max_image = max_image_bytes
        self._max_volume = max_volume_bytes
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="capstan-task")
        self._lock = threading.Lock()
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._stop = threading.Event()
        self.outcomes: deque[TaskOutcome] = deque(maxlen=256)
        self.ignored = 0  # tasks dropped as repeats or after stop()
        self.credentials_for: Callable[[str], grpc.ChannelCredentials] | None = None

    # -- intake -------------------------------------------------------------------------

    def submit(self, tasks: list[gateway_pb2.Task]) -> None:
        """Queue tasks; returns at once (it runs on the Report stream's reading thread)."""
        for task in tasks:
            with self._lock:
                if self._stop.is_set() or task.request_id in self._seen:
                    self.ignored += 1
                    continue
                self._seen[task.request_id] = None
                while len(self._seen) > _REMEMBERED_IDS:
                    self._seen.popitem(last=False)
            copy = gateway_pb2.Task()
            copy.CopyFrom(task)
            try:
                self._pool.submit(self._run, copy)
            except RuntimeError:  # the pool shut down meanwhile
                self.ignored += 1

    def stop(self, timeout: float = 5.0) -> None:
        """Take no more tasks; drop queued ones and let running ones end (bounded wait)."""
        self._stop.set()
        self._pool.shutdown(wait=False, cancel_futures=True)
        done = threading.Event()

        def wait() -> None:
            self._pool.shutdown(wait=True)
            done.set()

        threading.Thread(target=wait, daemon=True).start()
        done.wait(timeout)

    # -- one task -----------------------------------------------------------------------

    def _run(self, task: gateway_pb2.Task) -> None:
        rid = task.request_id[:64]
        try:
            ok, message = self._execute(task)
        except Exception as exc:  # a bug must still be reported as a failure, not hang
            log.exception("task %s (%s) failed unexpectedly", rid, task.kind[:64])
            ok, message = False, f"internal error: {type(exc).__name__}"
        message = message[:MAX_MESSAGE]
        if ok:
            log.info("task %s %s %s done", rid, task.kind[:64], task.resource[:_MAX_FIELD])
        else:
            log.warning("task %s %s failed: %s", rid, task.kind[:64], message)
        completed = self._complete(rid, ok, message)
        self.outcomes.append(
            TaskOutcome(rid, task.kind[:64], task.resource[:_MAX_FIELD], ok, message, completed)
        )

    def _execute(self, task: gateway_pb2.Task) -> tuple[bool, str]:
        if task.expires_at < self._clock():
            return False, "task expired before it ran; nothing was fetched"
        if task.kind not in KINDS:
            return False, f"unknown task kind {task.kind[:64]!r}"
        try:
            self._check_fields(task)
            if task.kind == IMAGE_FETCH:
                return True, self._fetch_image(task)
            return True, self._fetch_volume(task)
        except CapstanError as exc:
            return False, str(exc)

    def _check_fields(self, task: gateway_pb2.Task) -> None:
        for field in ("resource", "source_address", "source_id", "token"):
            value = getattr(task, field)
            if not value:
                raise InvalidArgument(field, "missing")
            if field != "token" and len(value) > _MAX_FIELD:
                raise InvalidArgument(field, "too long")
        if task.source_id == self._node_id:
            raise InvalidArgument("source_id", "a node does not fetch from itself")

    def _source(self, task: gateway_pb2.Task) -> NodeClient:
        # With ``credentials_for`` (node/renewal.py), the pair the token is bound to:
        # a token minted just before a certificate renewal still works.
        credentials = (
            self.credentials_for(task.token)
            if self.credentials_for is not None
            else self._credentials()
        )
        return NodeClient(task.source_address, credentials=credentials, expect=task.source_id)

    def _fetch_image(self, task: gateway_pb2.Task) -> str:
        ref = task.resource
        # A pinned image counts as present only with that digest; an unpinned one by tag.
        local = pinned.local_ref(self._runtime, ref)
        if local is not None and self._runtime.image_exists(local):
            return f"image {ref} already present; not fetched"
        with self._source(task) as client:
            stream = client.stream(
                "image.export", node_pb2.ImageRef(ref=ref), task.token, timeout=self._fetch_timeout
            )
            refs = import_image_checked(
                self._runtime, ref, _data(stream), self._spool, max_bytes=self._max_image
            )
        try:
            self._on_image()
        except Exception as exc:  # the image is loaded; a failed poke only delays the news
            log.warning("after fetching %s: %s", ref, exc)
        return f"image {ref} fetched from {task.source_id} ({', '.join(refs)})"

    def _fetch_volume(self, task: gateway_pb2.Task) -> str:
        name = task.resource
        with self._source(task) as client:
            stream = client.stream(
                "volume.export",
                node_pb2.VolumeRef(name=name),
                task.token,
                timeout=self._fetch_timeout,
            )
            # The source's digest of what it exported is required and checked before
            # the volume is replaced: a cut or altered stream leaves it as it was.
            data = digest_checked(stream, required=True)
            result = self._volumes.import_(name, data, max_bytes=self._max_volume)
        return (
            f"volume {name} fetched from {task.source_id} "
            f"({result.files} files, {result.bytes} bytes)"
        )

    # -- completion ---------------------------------------------------------------------

    def _complete(self, request_id: str, ok: bool, message: str) -> bool:
        result = gateway_pb2.TaskResult(request_id=request_id, ok=ok, message=message)
        for attempt in range(self._attempts):
            try:
                channel = self._gateway()
            except CapstanError as exc:
                log.error("cannot complete task %s: %s", request_id, exc)
                return False
            try:
                gateway_pb2_grpc.NodeGatewayStub(channel).Complete(result, timeout=10.0)
                return True
            except grpc.RpcError as exc:
                status = status_of(exc)
                code, details = status.code, status.details
                if code is grpc.StatusCode.PERMISSION_DENIED:
                    log.error(
                        "the orchestrator refused completing task %s: %s", request_id, details
                    )
                    return False
                if code is not grpc.StatusCode.UNAVAILABLE or attempt + 1 == self._attempts:
                    log.error("completing task %s failed: %s: %s", request_id, status.name, details)
                    return False
                log.info("gateway unavailable completing task %s; retrying", request_id)
            finally:
                channel.close()
            if self._stop.wait(self._retry_delay * 2**attempt):
                return False
        return False


def _data(stream: Iterator[node_pb2.DataChunk]) -> Iterator[bytes]:
    for chunk in stream:
        yield chunk.data
