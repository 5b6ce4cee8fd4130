"""Pull mode: the node watches its own assignments and converges to them itself.

One thread keeps a ``NodeGateway.Watch`` stream open over mTLS with the node's own
certificate (re-read at every reconnect) and keeps the latest ``Assignments``; the
orchestrator sends the complete set for this node whenever it changes, and nothing of
any other node. A second thread converges the local runtime to that set with
``node.converge.plan`` every interval and at once when a new set arrives.

Until the first set arrives nothing is touched: an empty view is not an empty
desired set. A set is taken only if it is not older than what the node has seen:
its leadership epoch must not be below the highest epoch the node has accepted (in
a token or a set: one ``EpochFloor`` with the authorizer), and within one epoch its
store revision must not go back. A deposed leader's stale view is refused.

When the stream breaks the node keeps converging to the last set it
had (its workloads keep running while the orchestrator is away) and reconnects with
the reporter's capped, jittered backoff.

An assignment the node will not run (a spec that fails validation, an unknown
policy) is logged and skipped, and a container it already has for that workload is
left alone rather than removed. A container that keeps exiting is restarted with a
growing delay (``RestartBackoff``), measured on the injected clock.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import grpc

from node import pinned
from node.authz import EpochFloor
from node.converge import Action, Create, Desired, Nothing, Remove, Start, plan
from node.errors import AlreadyExists, FailedPrecondition, NotFound
from node.reconnect import Backoff, GatewayStream
from node.runtime.base import Runtime
from node.secretfiles import SecretFiles
from node.service import spec_from_pb
from node.validation import check_owner, validate_spec
from node.volumes import VolumeStore
from node.workers import Workers
from pki.errors import CapstanError
from protos import gateway_pb2, gateway_pb2_grpc, node_pb2
from protos.wire.leader import Endpoints

log = logging.getLogger("capstan.node.puller")

__all__ = ["Puller", "RestartBackoff"]


@dataclass(frozen=True)
class RestartBackoff:
    """Delay before restarting a container that exited again: none for the first
    restart, then ``initial * 2**(n-1)`` capped at ``maximum``; forgotten once the
    container has run for ``reset_after`` seconds since its last restart."""

    initial: float = 1.0
    maximum: float = 60.0
    reset_after: float = 60.0

    def delay(self, restarts: int) -> float:
        if restarts <= 0:
            return 0.0
        return float(min(self.maximum, self.initial * 2 ** min(restarts - 1, 32)))


@dataclass
class _Restarts:
    count: int
    last: float


class Puller:
    """Keeps the Watch stream open and converges until ``stop()``; see the module docstring."""

    def __init__(
        self,
        runtime: Runtime,
        volumes: VolumeStore,
        *,
        gateway_address: str | Endpoints,
        cert: Path,
        key: Path,
        ca: Path,
        node_name: str,
        interval: float,
        clock: Callable[[], float] = time.time,
        backoff: Backoff | None = None,
        healthy_after: float | None = None,
        restart_backoff: RestartBackoff | None = None,
        stop_timeout: float = 10.0,
        on_change: Callable[[], None] = lambda: None,
        rng: random.Random | None = None,
        epochs: EpochFloor | None = None,
        secrets: SecretFiles | None = None,
    ) -> None:
        self._secrets = secrets
        # Sealed secrets of each desired instance, by container name (never opened
        # until the instance is created here).
        self._sealed: dict[str, list[node_pb2.SealedSecret]] = {}
        # The secret versions each instance's files hold (set at create and update).
        self._versions: dict[str, tuple[int, ...]] = {}
        if interval <= 0:
            raise ValueError("converge interval must be positive")
        self._runtime = runtime
        self._volumes = volumes
        self._name = node_name
        self._interval = interval
        self._clock = clock
        self._restart_backoff = restart_backoff or RestartBackoff()
        self._stop_timeout = stop_timeout
        self._on_change = on_change
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not a secret
        self._stream = GatewayStream(
            "watch",
            cert=Path(cert),
            key=Path(key),
            ca=Path(ca),
            gateway_address=gateway_address,
            backoff=backoff or Backoff(),
            rng=self._rng,
            healthy_after=healthy_after if healthy_after is not None else 3 * interval,
        )
        self._epochs = epochs or EpochFloor()

        self._stop = threading.Event()
        self._wake = threading.Event()
        self._lock = threading.Lock()  # guards _call and _latest
        self._call: grpc.Future | None = None
        self._latest: gateway_pb2.Assignments | None = None
        self._workers = Workers("puller")
        self._restarts: dict[str, _Restarts] = {}
        self._reported_bad: set[tuple[str, str]] = set()

        # Counters for operators and tests; written by one thread each.
        self.streams = 0  # Watch streams opened
        self.received = 0  # Assignments messages received
        self.converges = 0  # completed converge passes
        self.refused = 0  # sets refused as older than one already seen
        self.last_error = ""  # why the last stream ended
        self.last_actions: list[Action] = []  # the actions of the last pass that did something

    # -- lifecycle ----------------------------------------------------------------------

    def start(self) -> None:
        self._workers.start((self._watch, "capstan-watch"), (self._converge, "capstan-pull"))

    def stop(self, timeout: float = 5.0) -> None:
        """Close the stream and end both threads; workloads keep running."""
        self._stop.set()
        with self._lock:
            call = self._call
        if call is not None:
            call.cancel()
        self._wake.set()
        self._workers.join(timeout)

    def update(self, assignments: gateway_pb2.Assignments) -> bool:
        """Take a new complete set (from the Watch stream) and converge to it at once;
        False (and nothing changes) when it is older than what the node has seen."""
        with self._lock:
            latest = self._latest
            stale = assignments.epoch < self._epochs.value or (
                latest is not None
                and (assignments.epoch, assignments.revision) < (latest.epoch, latest.revision)
            )
            if stale:
                self.refused += 1
                log.warning(
                    "refused assignments of epoch %d revision %d: seen epoch %d%s",
                    assignments.epoch,
                    assignments.revision,
                    self._epochs.value,
                    "" if latest is None else f" revision {latest.revision}",
                )
                return False
            self._epochs.observe(assignments.epoch)
            self._latest = assignments
        self._wake.set()
        return True

    @property
    def assignments(self) -> gateway_pb2.Assignments | None:
        """The latest complete set received (None before the first)."""
        with self._lock:
            return self._latest

    # -- the Watch stream ---------------------------------------------------------------

    def _watch(self) -> None:
        def ended(reason: str, failures: int) -> None:
            self.last_error = reason

        self._stream.run(self._watch_once, stop=self._stop, ended=ended)

    def _watch_once(self, address: str, channel: grpc.Channel) -> str:
        try:
            call = gateway_pb2_grpc.NodeGatewayStub(channel).Watch(
                gateway_pb2.WatchRequest(node=self._name)
            )
            with self._lock:
                self._call = call
            self.streams += 1
            if self._stop.is_set():
                call.cancel()
            for assignments in call:
                self.received += 1
                if not self.update(assignments):
                    call.cancel()  # a stale orchestrator: look for the leader
                    self._stream.endpoints.failed(address)
                    return "sent an older epoch or revision than seen"
            return f"to {address} closed by the orchestrator"
        finally:
            with self._lock:
                self._call = None

    # -- converging ---------------------------------------------------------------------

    def _converge(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self._interval)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self.converge_once()
            except Exception:  # one bad pass must not end converging
                log.exception("converge pass failed")

    def converge_once(self) -> list[Action]:
        """One pass against the latest assignments; returns the actions carried out
        (empty before the first assignments arrive or when the runtime cannot list)."""
        assignments = self.assignments
        if assignments is None:
            return []
        desired, keep = self._desired(assignments)
        try:
            actual = self._runtime.list()
        except CapstanError as exc:
            log.error("cannot list containers to converge: %s", exc)
            return []
        self._rotate_secrets({c.name for c in actual})
        done: list[Action] = []
        failed: set[str] = set()
        for action in plan(desired, actual):
            if isinstance(action, Nothing):
                self._settle(action)
                continue
            if isinstance(action, Remove) and (action.workload_id in keep or action.name in keep):
                continue  # its assignment is unusable: leave what runs alone
            if action.name in failed:
                continue  # the create failed: no start
            if self._apply(action):
                done.append(action)
            elif isinstance(action, Create):
                failed.add(action.name)
        self.converges += 1
        if done:
            self.last_actions = done
            try:
                self._on_change()
            except Exception as exc:
                log.warning("after converging: %s", exc)
        return done

    def _rotate_secrets(self, present: set[str]) -> None:
        """Instances that run here and whose assignment carries newer secret versions
        get their files replaced in place (``capstan secret rotate``), no restart."""
        if self._secrets is None:
            return
        for name, sealed in self._sealed.items():
            versions = tuple(s.version for s in sealed)
            if name not in present or self._versions.get(name, versions) == versions:
                continue
            try:
                self._secrets.update(name, sealed)
            except CapstanError as exc:
                log.error("secrets of %s not updated: %s", name, exc)
                continue
            self._versions[name] = versions
            log.info("updated the secrets of %s to versions %s", name, versions)

    def _desired(self, assignments: gateway_pb2.Assignments) -> tuple[list[Desired], set[str]]:
        """The usable assignments, and the workload ids and names of the unusable ones."""
        desired: list[Desired] = []
        keep: set[str] = set()
        for a in assignments.assignments:
            try:
                spec = spec_from_pb(a.spec)
                if spec.workload_id != a.workload_id:
                    raise ValueError(
                        f"spec is for workload {spec.workload_id!r}, not {a.workload_id!r}"
                    )
                entry = Desired(a.workload_id, spec, a.desired, a.restart or "always")
                if entry.desired == "running":
                    validate_spec(spec)
                    check_owner(spec)
            except (CapstanError, ValueError) as exc:
                keep.update(x for x in (a.workload_id, a.spec.name) if x)
                key = (a.workload_id, str(exc))
                if key not in self._reported_bad:
                    self._reported_bad.add(key)
                    log.error("skipping assignment %s: %s", a.workload_id[:128], exc)
                continue
            desired.append(entry)
            if a.spec.secrets:
                self._sealed[spec.name] = list(a.spec.secrets)
        return desired, keep

    def _apply(self, action: Action) -> bool:
        """Carry out one action; False when it failed (logged) or must wait."""
        try:
            if isinstance(action, Create):
                for mount in action.spec.volumes:
                    self._volumes.ensure(mount.name)
                spec = pinned.runnable(self._runtime, action.spec)
                sealed = self._sealed.get(action.name)
                if sealed:
                    if self._secrets is None:
                        raise FailedPrecondition("this node holds no seal key")
                    uid, gid = self._runtime.secret_owner(spec)
                    mounts, env = self._secrets.open(action.name, sealed, uid, gid)
                    self._versions[action.name] = tuple(s.version for s in sealed)
                    spec = dataclasses.replace(spec, secrets=mounts, env=(*spec.env, *env))
                # AlreadyExists: a create of an earlier pass that the listing missed.
                try:
                    with contextlib.suppress(AlreadyExists):
                        self._runtime.create(spec)
                finally:
                    if sealed and self._secrets is not None:
                        self._secrets.created(action.name)
                log.info("created %s for %s", action.name, action.workload_id)
            elif isinstance(action, Start):
                if action.restart and not self._restart_due(action.name):
                    return False
                self._runtime.start(action.name)
                if action.restart:
                    log.warning(
                        "restarted %s (exit code %s)",
                        action.name,
                        "unknown" if action.exit_code is None else action.exit_code,
                    )
            elif isinstance(action, Remove):
                self._remove(action.name)
                self._sealed.pop(action.name, None)
                self._versions.pop(action.name, None)
                if self._secrets is not None:
                    self._secrets.remove(action.name)
                self._restarts.pop(action.name, None)
                log.info("removed %s (%s)", action.name, action.why)
            return True
        except CapstanError as exc:
            log.error("%s %s failed: %s", type(action).__name__.lower(), action.name, exc)
            return False

    def _remove(self, name: str) -> None:
        try:
            self._runtime.stop(name, timeout=self._stop_timeout)
        except NotFound:
            return
        except CapstanError as exc:  # removed by force below
            log.warning("stop %s failed: %s", name, exc)
        with contextlib.suppress(NotFound):
            self._runtime.remove(name, force=True)

    def _restart_due(self, name: str) -> bool:
        now = self._clock()
        entry = self._restarts.get(name)
        count = entry.count if entry else 0
        if entry is not None and now < entry.last + self._restart_backoff.delay(count):
            return False
        self._restarts[name] = _Restarts(count + 1, now)
        return True

    def _settle(self, action: Nothing) -> None:
        """A container that has run long enough since its last restart starts over."""
        entry = self._restarts.get(action.name)
        if (
            entry is not None
            and action.why == "running"
            and self._clock() - entry.last >= self._restart_backoff.reset_after
        ):
            del self._restarts[action.name]
