"""What the orchestrator has heard from each node: heartbeats and reported containers.

Kept in memory (a heartbeat a second per node must not be a store write); the node's
persisted record is updated only when its liveness state changes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from protos import gateway_pb2, node_pb2
from protos.wire import images as wire_images


def with_tag(ref: str) -> str:
    """Runtimes list refs with their tag: ``busybox`` is reported as ``busybox:latest``."""
    last = ref.rsplit("/", 1)[-1]
    return ref if ":" in last or "@" in last else f"{ref}:latest"


class Liveness(StrEnum):
    READY = "ready"
    SUSPECT = "suspect"
    DEAD = "dead"


@dataclass
class NodeView:
    last_seen: float = 0.0
    report_at: float = 0.0  # when the last full container list arrived
    # The node's own clock when it began reading that list (its sent_at): compared only
    # with times of the same clock (a container's started_at), never with ours.
    report_read_at: float = 0.0
    containers: dict[str, node_pb2.ContainerStatus] = field(default_factory=dict)
    usage: dict[str, gateway_pb2.ContainerUsage] = field(default_factory=dict)
    images: set[str] = field(default_factory=set)
    images_known: bool = False
    thumbprint: str = ""  # of the certificate its report stream authenticated with
    deaf_at_seen: float = 0.0  # Tracker.deaf when the last report was taken in


class Tracker:
    def __init__(
        self,
        *,
        heartbeat: float,
        grace: float,
        clock: Callable[[], float],
        started: float = 0.0,
    ) -> None:
        self.heartbeat = heartbeat
        self.grace = grace
        self._clock = clock
        self.nodes: dict[str, NodeView] = {}
        # When this orchestrator began listening (or leading): a node not heard from
        # since gets one grace period from then.
        self.started = started
        # Seconds, in total, during which the orchestrator itself could not listen (its
        # event loop was stalled: reports queued unread). A node is judged on the time
        # the orchestrator could hear it: silence the orchestrator caused is not the
        # node's, or one long stall under load would declare every node dead at once.
        self.deaf = 0.0
        self.last_heard = 0.0  # the latest report taken in, from any node

    def seen(
        self,
        node: str,
        status: gateway_pb2.NodeStatus,
        containers: Sequence[node_pb2.ContainerStatus] | None = None,
    ) -> bool:
        """Record a heartbeat; ``containers`` (default: the status's own) are the ones
        accepted. True when what the node runs changed since its last report (a
        reconcile pass is worth it); a heartbeat that repeats the last report is not."""
        now = self._clock()
        view = self.nodes.setdefault(node, NodeView())
        first = view.last_seen == 0.0
        view.last_seen = now
        view.deaf_at_seen = self.deaf
        self.last_heard = now
        listed = status.containers if containers is None else containers
        changed = first
        if status.full:
            current = {c.name: c for c in listed}
            old = view.containers
            if not changed and (
                len(current) != len(old) or any(old.get(k) != c for k, c in current.items())
            ):
                changed = True
            view.containers = current
            view.report_at = now
            view.report_read_at = status.sent_at
        else:
            for c in listed:
                if view.containers.get(c.name) != c:
                    changed = True
                view.containers[c.name] = c
        if status.usage:
            view.usage = {u.name: u for u in status.usage}
        if status.full:
            images = {with_tag(i) for i in status.images}
            # Pinned forms too: whether this node needs a copy of a pinned image. Its
            # own word, used for nothing else (sources come from orchestrator.images).
            for entry in status.image_digests:
                try:
                    _, digest = wire_images.split(entry)
                except wire_images.NotPinned:
                    continue
                if digest is not None:
                    images.add(wire_images.content_key(entry))
            if images != view.images or not view.images_known:
                changed = True
            view.images = images
            view.images_known = True
        return changed

    def now(self) -> float:
        return self._clock()

    def begin(self, at: float) -> None:
        """Forget what was heard and count silence from ``at`` (a new leadership)."""
        self.nodes.clear()
        self.started = at

    def quiet(self) -> float:
        """Seconds of the current silence of every node at once, when that is more
        than this many nodes would leave by chance (three heartbeats shared among the
        nodes heard within the grace: 3 ms at 1,000 nodes, 1 s at three); else 0.
        The orchestrator not hearing anyone is the orchestrator's own deafness (gRPC
        stopped handing reports over while its loop still ran: bench_scale.py at
        1,000 nodes, 2.5 s); one node silent among others talking is the node."""
        now = self._clock()
        quiet = now - self.last_heard
        if self.last_heard == 0.0 or quiet <= 0.25:
            return 0.0
        live = sum(1 for v in self.nodes.values() if 0 < now - v.last_seen <= self.grace)
        if live == 0 or quiet <= 3 * self.heartbeat / live:
            return 0.0
        return quiet

    def stalled(self, seconds: float) -> None:
        """The orchestrator could not take reports in for ``seconds`` (see ``deaf``)."""
        self.deaf += max(0.0, seconds)

    def identify(self, node: str, thumbprint: str) -> None:
        self.nodes.setdefault(node, NodeView()).thumbprint = thumbprint

    def thumbprint(self, node: str) -> str:
        view = self.nodes.get(node)
        return view.thumbprint if view else ""

    def has_image(self, node: str, ref: str) -> bool | None:
        """True or False when the node said; None when it has not reported images yet.
        A pinned ref counts only with its digest. The node's own word: never a reason
        to fetch from it."""
        view = self.nodes.get(node)
        if view is None or not view.images_known:
            return None
        return _image_key(ref) in view.images

    def add_image(self, node: str, ref: str) -> None:
        self.nodes.setdefault(node, NodeView()).images.add(_image_key(ref))

    def forget(self, node: str) -> None:
        self.nodes.pop(node, None)

    def liveness(self, node: str, *, joined_at: float = 0.0) -> Liveness:
        view = self.nodes.get(node)
        now = self._clock()
        # A node never heard from since this orchestrator started gets one grace
        # period from the start (or its join) before it counts as dead.
        heard = view is not None and view.last_seen > 0
        last = view.last_seen if view is not None and heard else max(joined_at, self.started)
        silent = now - last
        if view is not None and heard:
            silent -= self.deaf - view.deaf_at_seen
        if silent <= self.heartbeat * 1.5 + 0.25:
            return Liveness.READY if heard else Liveness.SUSPECT
        if silent <= self.grace:
            return Liveness.SUSPECT
        return Liveness.DEAD

    def dead_at(self, node: str, *, joined_at: float = 0.0) -> float:
        """When (on the injected clock) ``node`` counts as dead if nothing more is heard
        from it and the orchestrator loses no more time: what ``liveness`` compares."""
        view = self.nodes.get(node)
        if view is not None and view.last_seen > 0:
            return view.last_seen + (self.deaf - view.deaf_at_seen) + self.grace
        return max(joined_at, self.started) + self.grace

    def containers(self, node: str) -> dict[str, node_pb2.ContainerStatus]:
        view = self.nodes.get(node)
        return view.containers if view else {}

    def report_at(self, node: str) -> float:
        view = self.nodes.get(node)
        return view.report_at if view else 0.0

    def report_read_at(self, node: str) -> float:
        """The node's clock when it read its last full container list (its word)."""
        view = self.nodes.get(node)
        return view.report_read_at if view else 0.0


def _image_key(ref: str) -> str:
    # A pinned image is held when its content is, whatever tag the node keeps it under.
    _, digest = wire_images.split(ref)
    return wire_images.content_key(ref) if digest is not None else with_tag(ref)
