"""The node's Report stream to the orchestrator: heartbeats up, trust updates and fences down.

One background thread keeps a ``NodeGateway.Report`` stream open over mTLS with the
node's own certificate (re-read at every reconnect, so a renewed certificate is
used), and sends a full ``NodeStatus`` (containers, images, usage) every heartbeat
interval, at once on connect and after a fence. Container usage is
measured by a second thread: ``stats`` can take a second per container, and a loaded
node must still heartbeat on time, so a heartbeat carries the last usage measured.
Fences run on a third thread so a slow stop never delays reading trust updates;
tasks are handed to an ``on_tasks`` callback (a node without one logs and drops them).

Nothing here may bring the agent down: every failure is logged and the stream is
reopened with capped exponential backoff and jitter.
"""

from __future__ import annotations

import logging
import queue
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc

from node import metrics
from node.errors import NotFound
from node.reconnect import Backoff, GatewayStream
from node.renewal import trust_digest_of_files
from node.runtime.base import ContainerState, ContainerStatus, Runtime
from node.service import status_to_pb
from node.workers import Workers
from pki.certs import load_pem_chain
from pki.errors import CapstanError
from pki.files import atomic_write
from pki.tokenkeys import KeySet
from protos import gateway_pb2, gateway_pb2_grpc
from protos.wire.errors import Status
from protos.wire.leader import Endpoints
from protos.wire.trust import check_trust_update, parse_deny_list

log = logging.getLogger("capstan.node.reporter")

__all__ = ["Reporter"]

JITTER = 0.1  # heartbeats are spread by +-10% so a restarted cluster does not beat in step


class Reporter:
    """Keeps the Report stream open until ``stop()``; see the module docstring."""

    def __init__(
        self,
        runtime: Runtime,
        *,
        gateway_address: str | Endpoints,
        cert: Path,
        key: Path,
        ca: Path,
        jwks: Path,
        deny_list: Path,
        interval: float,
        usage_interval: float | None = None,
        backoff: Backoff | None = None,
        healthy_after: float | None = None,
        fence_timeout: float = 10.0,
        on_tasks: Callable[[list[gateway_pb2.Task]], None] | None = None,
        on_links: Callable[[gateway_pb2.LinkPlan], None] | None = None,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        if interval <= 0:
            raise ValueError("heartbeat interval must be positive")
        self._runtime = runtime
        self._cert, self._ca = Path(cert), Path(ca)
        self._jwks, self._deny = Path(jwks), Path(deny_list)
        self._interval = interval
        self._usage_interval = usage_interval if usage_interval is not None else interval
        self._fence_timeout = fence_timeout
        # Tasks (delegated fetches) are handed to whoever runs them; it must return
        # quickly (queue the work), as it runs on the stream's reading thread.
        self._on_tasks = on_tasks
        self._on_links = on_links  # the data plane's new link plan (node/links)
        self._clock = clock
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not a secret
        self._stream = GatewayStream(
            "report",
            cert=self._cert,
            key=Path(key),
            ca=self._ca,
            gateway_address=gateway_address,
            backoff=backoff or Backoff(),
            rng=self._rng,
            # A stream that stayed up this long counts as a success: the next failure
            # starts the backoff over (a stream refused at once must not hot-loop).
            healthy_after=healthy_after if healthy_after is not None else 3 * interval,
        )

        self._stop = threading.Event()
        self._lock = threading.Lock()  # guards _call and _wake
        self._call: grpc.Future | None = None
        self._wake: threading.Event | None = None
        self._usage: dict[str, gateway_pb2.ContainerUsage] = {}
        self._fences: queue.Queue[list[str] | None] = queue.Queue()
        self._workers = Workers("reporter")
        self._list_failing = False
        self._reconnect = threading.Event()
        # Certificate lifecycle: asked to renew now (CA rotation), set by the agent.
        self.on_renew: Callable[[], None] | None = None

        # Counters for operators and tests; written by one thread each.
        self.heartbeats = 0  # statuses handed to the stream
        self.streams = 0  # streams opened
        self.failures = 0  # stream ends since the last stream that lasted (sets the backoff)
        self.messages = 0  # GatewayMessages received
        self.trust_refused = 0  # trust updates not applied (unsigned, unknown key, older)
        # (epoch, issued_at_ms) of the last applied trust update, kept beside the JWKS
        # so that a restart does not reopen the door to replaying an older one.
        self._order_file = self._jwks.with_name("trust-order")
        self._trust_order = _read_order(self._order_file)
        self.usage_rounds = 0  # completed usage measurements
        # The latest containers stopped and removed on the orchestrator's word.
        self.fenced: deque[str] = deque(maxlen=256)
        # Told every complete container listing (the agent prunes secret files with it).
        self.on_listed: Callable[[list[str]], object] = lambda names: None
        self.on_revoked: Callable[[], object] = lambda: None

    # -- lifecycle ----------------------------------------------------------------------

    def start(self) -> None:
        self._workers.start(
            (self._run, "capstan-report"),
            (self._measure_usage, "capstan-usage"),
            (self._run_fences, "capstan-fence"),
        )

    def stop(self, timeout: float = 5.0) -> None:
        """Close the stream and end every thread; returns when they are gone (or ``timeout``)."""
        self._stop.set()
        with self._lock:
            call, wake = self._call, self._wake
        if call is not None:
            call.cancel()
        if wake is not None:
            wake.set()
        self._fences.put(None)
        self._workers.join(timeout)

    def reconnect(self) -> None:
        """Reopen the stream at once with the certificate on disk (after a renewal)."""
        self._reconnect.set()
        with self._lock:
            call = self._call
        if call is not None:
            call.cancel()

    def poke(self) -> None:
        """Send a status now rather than at the next heartbeat (after a local change)."""
        with self._lock:
            wake = self._wake
        if wake is not None:
            wake.set()

    # -- the stream ---------------------------------------------------------------------

    def _run(self) -> None:
        def ended(reason: str, failures: int) -> None:
            self.failures = failures

        self._stream.run(
            self._stream_once,
            stop=self._stop,
            now_again=self._reconnect,  # a renewed certificate: reconnect at once
            ended=ended,
            broke=self._broke,
        )

    def _stream_once(self, address: str, channel: grpc.Channel) -> str:
        """One Report stream, until it ends. Returns why it ended."""
        ended, wake = threading.Event(), threading.Event()
        try:
            call = gateway_pb2_grpc.NodeGatewayStub(channel).Report(self._statuses(ended, wake))
            with self._lock:
                self._call, self._wake = call, wake
            self.streams += 1
            if self._stop.is_set():  # stop() ran before the call was published
                call.cancel()
            for message in call:
                self.messages += 1
                self._handle(message)
            return f"to {address} closed by the orchestrator"
        finally:
            ended.set()
            wake.set()
            with self._lock:
                self._call, self._wake = None, None

    def _broke(self, status: Status) -> None:
        if "revoked" in status.details.lower() and status.name in (
            "UNAUTHENTICATED", "PERMISSION_DENIED"
        ):
            # The orchestrator (its identity proven in the handshake) ended or refused
            # this node's stream for its revoked certificate: the deny list naming it
            # may never arrive, so this refusal is the notice.
            log.warning("this node's certificate is revoked: removing every secret it holds")
            self.on_revoked()

    def _statuses(
        self, ended: threading.Event, wake: threading.Event
    ) -> Iterator[gateway_pb2.NodeStatus]:
        """The request side of one stream; gRPC pulls it from its own thread."""
        while not ended.is_set() and not self._stop.is_set():
            for status in self._timely_statuses(ended):
                yield status
                self.heartbeats += 1
            wake.wait(self._interval * self._rng.uniform(1 - JITTER, 1 + JITTER))
            wake.clear()

    def _timely_statuses(self, ended: threading.Event) -> Iterator[gateway_pb2.NodeStatus]:
        """The next full status; while the runtime takes longer than a heartbeat
        interval to list (an engine busy starting containers holds each one's lock,
        and an inspect waits for it), a bare heartbeat every interval before it: the
        node is alive, only slow, and must not be declared dead for its engine's pace."""
        box: list[gateway_pb2.NodeStatus] = []
        done = threading.Event()

        def work() -> None:
            try:
                box.append(self._status())
            finally:
                done.set()

        threading.Thread(target=work, name="capstan-list", daemon=True).start()
        while not done.wait(self._interval):
            if ended.is_set() or self._stop.is_set():
                return
            yield self._alive()
        if box:
            yield box[0]

    def _alive(self) -> gateway_pb2.NodeStatus:
        """A heartbeat claiming nothing: no containers, no images, not full."""
        metrics.HEARTBEATS_SENT.inc()
        return gateway_pb2.NodeStatus(
            sent_at=self._clock(),
            full=False,
            trust_digest=trust_digest_of_files(self._jwks, self._ca),
        )

    def _status(self) -> gateway_pb2.NodeStatus:
        # sent_at is when the list began to be read: everything started before it is in
        # it (the orchestrator compares it with containers' started_at, same clock).
        read_at = self._clock()
        try:
            containers: list[ContainerStatus] = self._runtime.list()
            # One engine call for both: every ref ``images`` lists is in ``image_ids``.
            ids = self._runtime.image_ids()
            images: list[str] = sorted(ids)
            digests = [f"{ref}@{image_id}" for ref, image_id in ids.items()]
            full = True
            if self._list_failing:
                log.warning("runtime lists containers again")
                self._list_failing = False
        except Exception as exc:  # a heartbeat must go out even when the runtime fails
            # Still beat (the node is alive), but claim no complete list: full=false says
            # "these are changes", never "nothing else runs here" or "no images here".
            if not self._list_failing:
                log.error("cannot list containers and images for the report: %s", exc)
                self._list_failing = True
            containers, images, digests, full = [], [], [], False
        if full:
            try:
                self.on_listed([c.name for c in containers])
            except Exception as exc:
                log.error("after listing containers: %s", exc)
        usage = self._usage
        running = sorted(c.name for c in containers if c.state is ContainerState.RUNNING)
        metrics.HEARTBEATS_SENT.inc()
        return gateway_pb2.NodeStatus(
            sent_at=read_at,
            containers=[status_to_pb(c) for c in containers],
            usage=[usage[name] for name in running if name in usage],
            full=full,
            images=images,
            image_digests=sorted(digests),
            trust_digest=trust_digest_of_files(self._jwks, self._ca),
        )

    # -- messages from the orchestrator ---------------------------------------------------

    def _trusted(self, update: gateway_pb2.TrustUpdate) -> bool:
        """Apply a trust update only when a token key this node already trusts signed it
        and it is not older than the last one applied (protos.wire.trust)."""
        try:
            keys = KeySet.from_file(self._jwks)
            order = check_trust_update(update, keys, after=self._trust_order)
            if order != self._trust_order:
                atomic_write(self._order_file, f"{order[0]} {order[1]}\n".encode())
            self._trust_order = order
        except (CapstanError, ValueError, OSError) as exc:
            log.error("ignoring a trust update: %s", exc)
            self.trust_refused += 1
            return False
        return True

    def _check_own_revocation(self, deny_list: bytes) -> None:
        """This node's own certificate on a deny list the orchestrator signed: what it
        was given for its instances (their secrets) is no longer its to hold."""
        try:
            own = load_pem_chain(self._cert.read_bytes())[0].serial_number
            revoked = own in parse_deny_list(deny_list)
        except (CapstanError, OSError, ValueError) as exc:
            log.error("cannot check the deny list against this node: %s", exc)
            return
        if revoked:
            log.warning("this node's certificate is revoked: removing every secret it holds")
            self.on_revoked()

    def _handle(self, message: gateway_pb2.GatewayMessage) -> None:
        if message.HasField("trust") and self._trusted(message.trust):
            # An empty field means "unchanged": an empty deny list must never be read as
            # "forget every revocation". To clear the list, the orchestrator sends a
            # comment line.
            if message.trust.jwks:
                self._replace(self._jwks, message.trust.jwks, "token keys (JWKS)", KeySet.from_jwks)
            if message.trust.deny_list:
                self._replace(self._deny, message.trust.deny_list, "deny list", parse_deny_list)
                self._check_own_revocation(message.trust.deny_list)
            if message.trust.trust_bundle:
                self._replace(self._ca, message.trust.trust_bundle, "trust bundle", load_pem_chain)
            self.poke()  # the next status acknowledges what the node now trusts
        if message.renew_now and self.on_renew is not None:
            self.on_renew()
        if message.HasField("links") and self._on_links is not None:
            try:
                self._on_links(message.links)
            except Exception as exc:  # must not end the stream either
                log.error("link plan not applied: %s", exc)
        if message.fence:
            self._fences.put(list(message.fence))
        if message.tasks:
            if self._on_tasks is None:
                log.warning(
                    "ignoring %d task(s): this node runs no task executor", len(message.tasks)
                )
            else:
                try:
                    self._on_tasks(list(message.tasks))
                except Exception as exc:  # the executor's failure must not end the stream
                    log.error("task executor failed: %s", exc)

    @staticmethod
    def _replace(path: Path, data: bytes, what: str, check: Callable[[bytes], object]) -> None:
        """Rewrite ``path`` atomically when ``data`` parses; the agent's reloader picks it up.
        A file the agent would refuse is never written: it would also stop a restart."""
        try:
            check(data)
        except (CapstanError, ValueError) as exc:
            log.error("ignoring the %s sent by the orchestrator: %s", what, exc)
            return
        try:
            # The orchestrator repeats its trust at every stream start; an identical
            # file is left alone so the agent does not reload it for nothing.
            if path.exists() and path.read_bytes() == data:
                return
            atomic_write(path, data)
        except (OSError, CapstanError) as exc:
            log.error("cannot write %s %s: %s", what, path, exc)
            return
        log.info("updated %s %s", what, path)

    def _run_fences(self) -> None:
        while True:
            names = self._fences.get()
            if names is None or self._stop.is_set():
                return
            for name in names:
                self._fence(name)
            self.poke()  # let the orchestrator see the containers gone now

    def _fence(self, name: str) -> None:
        """Stop and remove a container the orchestrator has replaced elsewhere."""
        try:
            self._runtime.stop(name, timeout=self._fence_timeout)
        except NotFound:
            return  # already gone: the fence holds
        except Exception as exc:  # still remove it below, by force
            log.error("fence %s: stop failed: %s", name, exc)
        try:
            self._runtime.remove(name, force=True)
        except NotFound:
            pass
        except Exception as exc:
            log.error("fence %s: remove failed: %s", name, exc)
            return
        self.fenced.append(name)
        log.warning("fenced container %s: the orchestrator replaced it elsewhere", name)

    # -- usage --------------------------------------------------------------------------

    def _measure_usage(self) -> None:
        while not self._stop.is_set():
            fresh: dict[str, gateway_pb2.ContainerUsage] = {}
            try:
                containers = self._runtime.list()
            except Exception:  # reported by the heartbeat path; measure again later
                containers = []
            for c in containers:
                if c.state is not ContainerState.RUNNING:
                    continue
                if self._stop.is_set():
                    return
                try:
                    s = self._runtime.stats(c.name)
                except Exception as exc:  # one container's failure spares the others
                    log.debug("no usage for %s: %s", c.name, exc)
                    continue
                fresh[c.name] = gateway_pb2.ContainerUsage(
                    name=c.name, cpu_fraction=s.cpu_fraction, memory_bytes=s.memory_bytes
                )
            self._usage = fresh  # one reference swap: heartbeats read it unlocked
            self.usage_rounds += 1
            self._stop.wait(self._usage_interval)


def _read_order(path: Path) -> tuple[int, int]:
    """The (epoch, issued_at_ms) recorded by the last applied trust update, (0, 0) if none."""
    try:
        epoch, issued = path.read_text().split()
        return int(epoch), int(issued)
    except (OSError, ValueError):
        return (0, 0)
