"""The node's data plane: links, tunnels and published ports (DESIGN §10).

For each running instance that links to a service ``S``, the agent listens inside
the instance's own network namespace on ``S``'s loopback address (one per linked
service, 127.0.0.0/8 binds on ``lo`` without adding addresses) at every port ``S``
declares. A connection accepted there goes to one running instance of ``S``, in
turn: an instance on this node is reached by connecting inside *its* namespace to
127.0.0.1:port; an instance on another node through a tunnel to that node, opened
with a single-use token the orchestrator delegated (the link plan). A published
port is a listener on the node's own address that forwards into the one local
instance publishing it.

The target side of a tunnel connects only to instances of exactly the service its
token names, on a port that service declared in the spec the orchestrator signed;
and a tunnel stays open only while the orchestrator's plan grants it, the plan has
not lapsed and the source's certificate is not revoked: a watchdog closes it within
``interval`` of any of these changing (well under the 2 s the design asks).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import grpc

from node.audit import NodeAudit
from node.links._netns import Namespace, NamespaceError
from node.links._pump import splice
from node.links._tunnel import Frame, InboundTunnel, OutboundTunnel
from node.runtime.base import ContainerState, NetSpec, Runtime
from pki.peers import Peer
from protos import gateway_pb2, node_pb2_grpc

log = logging.getLogger("capstan.node.links")

__all__ = ["LinkManager", "LinkRefused", "parse_res"]

_RES_RE = re.compile(
    r"^(?P<service>[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(/[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?){2})"
    r":(?P<port>[0-9]{1,5})$"
)
_ACCEPT_WAIT = 3.0  # how long a source waits for the target to accept a tunnel
_GRANT_WAIT = 2.0  # how long a target waits for the grant of a tunnel being opened
_CONNECT_TIMEOUT = 2.0


class LinkRefused(Exception):
    """A tunnel the target will not carry (PERMISSION_DENIED / INVALID_ARGUMENT)."""

    def __init__(self, code: grpc.StatusCode, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


def parse_res(res: str) -> tuple[str, int]:
    """``tenant/app/service:port`` -> (service ref, port); ValueError when malformed."""
    m = _RES_RE.fullmatch(res)
    if m is None or not 1 <= int(m.group("port")) <= 65535:
        raise ValueError(f"malformed link resource {res[:80]!r}")
    return m.group("service"), int(m.group("port"))


@dataclass
class _Listener:
    sock: socket.socket
    what: str  # for logs
    users: set[str] = field(default_factory=set)  # instances it serves

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()


@dataclass
class _Instance:
    name: str
    netns: str
    net: NetSpec
    ns: Namespace | None  # None: the node's own namespace (unisolated instance)
    listeners: list[_Listener] = field(default_factory=list)

    def socket(self) -> socket.socket:
        return self.ns.socket() if self.ns is not None else socket.socket()

    def declares(self, service: str, port: int) -> bool:
        return self.net.service == service and any(p.port == port for p in self.net.ports)


class LinkManager:
    """See the module docstring. ``sync()`` (run every ``interval`` by ``start()``)
    follows the runtime's running instances; ``set_plan`` takes the orchestrator's."""

    def __init__(
        self,
        runtime: Runtime,
        *,
        node_id: str,
        publish_host: str,
        audit: NodeAudit,
        revoked: Callable[[], frozenset[int]],
        channel_for: Callable[[str, str, str], grpc.Channel] | None = None,
        clock: Callable[[], float] = time.time,
        interval: float = 0.25,
    ) -> None:
        self._runtime = runtime
        self.node_id = node_id
        self._publish_host = publish_host
        self._audit = audit
        self._revoked = revoked
        # (address, expected SPIFFE id, token) -> a channel to that node with this
        # node's certificate; None on a node that opens no tunnels (tests, standalone).
        self._channel_for = channel_for
        self._clock = clock
        self.interval = interval
        self._lock = threading.RLock()
        self._instances: dict[str, _Instance] = {}
        # name -> ((runtime id, pid, started at), its NetSpec), of the last sync
        self._nets: dict[str, tuple[tuple[str, int, float | None], NetSpec]] = {}
        self._listeners: dict[tuple[str, str, int], _Listener] = {}
        self._routes: dict[str, list[gateway_pb2.LinkEndpoint]] = {}
        self._grants: set[tuple[str, str]] = set()
        self._valid_until = 0.0
        self._plan_changed = threading.Condition(self._lock)
        self._used_tokens: dict[str, float] = {}  # token -> its expiry
        self._outbound: dict[tuple[str, str], OutboundTunnel] = {}
        self._inbound: set[InboundTunnel] = set()
        self._turn: dict[str, itertools.count[int]] = {}
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="capstan-links", daemon=True)
        self._thread.start()
        # Enforcement runs apart from sync(): a slow runtime must not delay a closing.
        threading.Thread(target=self._watch, name="capstan-links-watch", daemon=True).start()

    def _watch(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self._enforce()
            except Exception:
                log.exception("link enforcement failed")

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(5)
        with self._lock:
            instances = list(self._instances.values())
            self._instances.clear()
            tunnels = [*self._outbound.values(), *self._inbound]
        for inst in instances:
            self._drop(inst)
        for tunnel in tunnels:
            tunnel.close("node agent stopping")

    def poke(self) -> None:
        self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.sync()
            except Exception:
                log.exception("link sync failed")
            self._wake.wait(self.interval)
            self._wake.clear()

    # -- following the runtime --------------------------------------------------------------

    def sync(self) -> None:
        running: dict[str, NetSpec] = {}
        known: dict[str, tuple[tuple[str, int, float | None], NetSpec]] = {}
        for status in self._runtime.list():
            if status.state is not ContainerState.RUNNING:
                continue
            # The same container still running the same process has the same namespace
            # and link spec: asked of the runtime again only when one changed (one
            # inspect per instance per second loads an engine that is starting others).
            key = (status.runtime_id, status.pid or 0, status.started_at)
            seen = self._nets.get(status.name)
            if status.runtime_id and status.pid and seen is not None and seen[0] == key:
                running[status.name] = seen[1]
                known[status.name] = seen
                continue
            with contextlib.suppress(Exception):
                net = self._runtime.net_spec(status.name)
                if net is not None:
                    running[status.name] = net
                    known[status.name] = (key, net)
        self._nets = known
        with self._lock:
            gone = [
                i
                for n, i in self._instances.items()
                if n not in running or running[n].netns != i.netns
            ]
            for inst in gone:
                del self._instances[inst.name]
        for inst in gone:
            self._drop(inst)
            log.info("links of %s closed", inst.name)
        for name, net in running.items():
            if name not in self._instances:
                self._add(name, net)

    def _add(self, name: str, net: NetSpec) -> None:
        try:
            ns = Namespace(net.netns) if net.isolated else None
        except NamespaceError as exc:
            log.warning("cannot open the network namespace of %s: %s", name, exc)
            return
        inst = _Instance(name, net.netns, net, ns)
        # Listeners are shared by the instances of one namespace: on a node that cannot
        # isolate instances they all live in the node's own (one listener serves all).
        space = str(ns.inode) if ns is not None else "node"
        wanted: list[tuple[tuple[str, str, int], str, Callable[[socket.socket], None]]] = []
        for link in net.links:
            for port in link.ports:
                wanted.append(
                    (
                        (space, link.address, port),
                        f"{link.target}:{port} at {link.address}:{port} of {name}",
                        functools_partial(self._link_conn, link.target, port),
                    )
                )
        for p in net.ports:
            if p.publish:
                wanted.append(
                    (
                        ("node", self._publish_host, p.publish),
                        f"{self._publish_host}:{p.publish} -> {net.service}:{p.port}",
                        functools_partial(self._publish_conn, net.service, p.port, p.publish),
                    )
                )
        with self._lock:
            self._instances[name] = inst
            for key, what, handle in wanted:
                listener = self._listeners.get(key)
                if listener is None:
                    try:
                        sock = inst.socket() if key[0] == space else socket.socket()
                        self._bind(sock, key[1], key[2])
                    except OSError as exc:
                        log.error("cannot listen for %s: %s", what, exc)
                        continue
                    listener = self._listeners[key] = _Listener(sock, what)
                    self._serve(listener, handle)
                listener.users.add(name)
                inst.listeners.append(listener)
        if inst.listeners:
            log.info("links of %s: %s", name, ", ".join(x.what for x in inst.listeners))

    def _drop(self, inst: _Instance) -> None:
        """Forget an instance that stopped; close the listeners nobody else uses."""
        closing = []
        with self._lock:
            for key, listener in list(self._listeners.items()):
                listener.users.discard(inst.name)
                if not listener.users:
                    del self._listeners[key]
                    closing.append(listener)
        for listener in closing:
            listener.close()
        if inst.ns is not None:
            inst.ns.close()

    @staticmethod
    def _bind(sock: socket.socket, host: str, port: int) -> None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
            sock.listen(512)
        except OSError:
            sock.close()
            raise

    def _serve(self, listener: _Listener, handle: Callable[[socket.socket], None]) -> None:
        def accept() -> None:
            while True:
                try:
                    conn, _ = listener.sock.accept()
                except OSError:
                    return
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                try:
                    handle(conn)
                except Exception:
                    log.exception("link connection on %s failed", listener.what)
                    conn.close()

        threading.Thread(target=accept, name="capstan-link-accept", daemon=True).start()

    # -- a connection accepted in a linking instance ------------------------------------------

    def _local_into(self, inst: _Instance, port: int) -> socket.socket | None:
        try:
            sock = inst.socket()
        except (OSError, NamespaceError):
            return None
        sock.settimeout(_CONNECT_TIMEOUT)
        try:
            sock.connect(("127.0.0.1", port))
        except OSError:
            sock.close()
            return None
        sock.settimeout(None)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    def _link_conn(self, target: str, port: int, conn: socket.socket) -> None:
        res = f"{target}:{port}"
        with self._lock:
            local = sorted(n for n, i in self._instances.items() if i.declares(target, port))
            remote = list(self._routes.get(res, ()))
            turn = self._turn.setdefault(res, itertools.count())
        choices: list[tuple[str, Any]] = [("local", n) for n in local]
        choices += [("remote", e) for e in remote]
        if not choices:
            conn.close()
            return
        start = next(turn) % len(choices)
        for kind, choice in choices[start:] + choices[:start]:
            if kind == "local":
                with self._lock:
                    inst = self._instances.get(choice)
                peer = self._local_into(inst, port) if inst is not None else None
                if peer is not None:
                    splice(conn, peer)
                    return
            elif self._carry_remote(res, choice, conn):
                return
        conn.close()

    def _publish_conn(self, service: str, port: int, publish: int, conn: socket.socket) -> None:
        """Into one local instance that publishes ``publish`` (in turn)."""
        with self._lock:
            local = sorted(
                (n, i)
                for n, i in self._instances.items()
                if i.declares(service, port)
                and any(p.port == port and p.publish == publish for p in i.net.ports)
            )
            turn = self._turn.setdefault(f"publish:{publish}", itertools.count())
        if local:
            start = next(turn) % len(local)
            for _, inst in local[start:] + local[:start]:
                peer = self._local_into(inst, port)
                if peer is not None:
                    splice(conn, peer)
                    return
        conn.close()

    # -- tunnels out --------------------------------------------------------------------------

    def _carry_remote(
        self, res: str, endpoint: gateway_pb2.LinkEndpoint, conn: socket.socket
    ) -> bool:
        tunnel = self._outbound_tunnel(res, endpoint)
        return tunnel is not None and tunnel.carry(conn)

    def _outbound_tunnel(
        self, res: str, endpoint: gateway_pb2.LinkEndpoint
    ) -> OutboundTunnel | None:
        key = (res, endpoint.node_id)
        with self._lock:
            tunnel = self._outbound.get(key)
            if tunnel is not None and not tunnel.closed.is_set():
                return tunnel
            now = self._clock()
            token = endpoint.token
            if (
                self._channel_for is None
                or not token
                or token in self._used_tokens
                or endpoint.token_expires_at <= now
            ):
                return None
            self._used_tokens[token] = endpoint.token_expires_at  # single use, even if it fails
            tunnel = OutboundTunnel(res, endpoint.node_id)
            self._outbound[key] = tunnel
        try:
            channel = self._channel_for(endpoint.address, endpoint.node_id, token)
        except Exception as exc:
            log.warning("tunnel %s to %s: %s", res, endpoint.node_id, exc)
            tunnel.close(str(exc))
            return None
        stub = node_pb2_grpc.NodeServiceStub(channel)
        call = stub.Tunnel(tunnel.requests(), metadata=(("authorization", f"Bearer {token}"),))
        tunnel.call = call
        accepted = threading.Event()

        def pump() -> None:
            tunnel.pump_responses(call, accepted)
            channel.close()
            self._audit.record(
                "link.tunnel.closed",
                at=self._clock(),
                res=res,
                target=endpoint.node_id,
                reason=tunnel.reason,
                bytes_sent=tunnel.counters.bytes_out,
                bytes_received=tunnel.counters.bytes_in,
                connections=tunnel.counters.connections,
            )

        threading.Thread(target=pump, name="capstan-tunnel-out", daemon=True).start()
        if not accepted.wait(_ACCEPT_WAIT) or tunnel.closed.is_set():
            call.cancel()
            tunnel.close(tunnel.reason or "not accepted in time")
            log.warning("tunnel %s to %s refused: %s", res, endpoint.node_id, tunnel.reason)
            return None
        self._audit.record("link.tunnel.opened", at=self._clock(), res=res, target=endpoint.node_id)
        return tunnel

    # -- the orchestrator's plan ----------------------------------------------------------------

    def set_plan(self, plan: gateway_pb2.LinkPlan) -> None:
        routes: dict[str, list[gateway_pb2.LinkEndpoint]] = {}
        for route in plan.routes:
            routes[route.res] = [e for e in route.endpoints if e.node_id != self.node_id]
        grants = {(g.source_id, g.res) for g in plan.grants}
        now = self._clock()
        with self._lock:
            self._routes = routes
            self._grants = grants
            self._valid_until = plan.valid_until
            self._used_tokens = {t: exp for t, exp in self._used_tokens.items() if exp > now}
            self._plan_changed.notify_all()
        self._enforce()

    def _granted(self, source: str, res: str) -> bool:
        return (source, res) in self._grants and self._clock() < self._valid_until

    def _enforce(self) -> None:
        """Close what the plan no longer allows: inbound tunnels without a live grant or
        from a revoked certificate, outbound tunnels to endpoints no longer routed."""
        revoked = self._revoked()
        with self._lock:
            inbound = [
                (t, "link withdrawn" if not self._granted(t.peer, t.res) else "source revoked")
                for t in self._inbound
                if not self._granted(t.peer, t.res) or t.serial in revoked
            ]
            routed = {(r, e.node_id) for r, es in self._routes.items() for e in es}
            outbound = [
                t for k, t in self._outbound.items() if k not in routed or t.closed.is_set()
            ]
            for t in outbound:
                self._outbound.pop((t.res, t.node_id), None)
        for tunnel, reason in inbound:
            tunnel.close(reason)
        for out in outbound:
            out.close("link withdrawn")
            call = out.call
            if call is not None:
                call.cancel()  # type: ignore[attr-defined]

    # -- tunnels in (NodeService.Tunnel) ----------------------------------------------------

    def serve_tunnel(
        self, peer: Peer, requests: Iterator[Frame], context: grpc.ServicerContext
    ) -> Iterator[Frame]:
        first = next(requests, None)
        if first is None:
            raise LinkRefused(grpc.StatusCode.INVALID_ARGUMENT, "empty tunnel")
        try:
            service, port = parse_res(first.res)
        except ValueError as exc:
            raise LinkRefused(grpc.StatusCode.INVALID_ARGUMENT, str(exc)) from None
        deadline = time.monotonic() + _GRANT_WAIT
        with self._lock:
            # The plan reaches the two nodes separately: give the grant a moment.
            while not self._granted(peer.uri, first.res):
                left = deadline - time.monotonic()
                if left <= 0:
                    self._audit.record(
                        "link.refused",
                        at=self._clock(),
                        peer=peer.uri,
                        res=first.res,
                        reason="not granted",
                    )
                    raise LinkRefused(grpc.StatusCode.PERMISSION_DENIED, "link not granted")
                self._plan_changed.wait(min(left, 0.1))
            if peer.serial in self._revoked():
                raise LinkRefused(grpc.StatusCode.UNAUTHENTICATED, "certificate revoked")
            turn = self._turn.setdefault(f"in:{first.res}", itertools.count())

        def connect() -> socket.socket | None:
            targets = self.tunnel_targets(service, port)
            if not targets:
                return None
            start = next(turn) % len(targets)
            for inst in targets[start:] + targets[:start]:
                sock = self._local_into(inst, port)
                if sock is not None:
                    return sock
            return None

        tunnel = InboundTunnel(
            peer=peer.uri, serial=peer.serial, res=first.res, connect=connect
        )
        with self._lock:
            self._inbound.add(tunnel)
        self._audit.record("link.opened", at=self._clock(), peer=peer.uri, res=first.res)
        reader = threading.Thread(
            target=tunnel.pump_requests, args=(requests,), name="capstan-tunnel-in", daemon=True
        )
        reader.start()
        context.add_callback(lambda: tunnel.close("stream ended"))
        try:
            yield from tunnel.responses()
        finally:
            tunnel.close(tunnel.reason or "stream ended")
            with self._lock:
                self._inbound.discard(tunnel)
            c = tunnel.counters
            self._audit.record(
                "link.closed",
                at=self._clock(),
                peer=peer.uri,
                res=first.res,
                reason=tunnel.reason,
                bytes_in=c.bytes_in,
                bytes_out=c.bytes_out,
                connections=c.connections,
                refused=c.refused,
            )
        if tunnel.reason in ("link withdrawn", "source revoked"):
            raise LinkRefused(grpc.StatusCode.PERMISSION_DENIED, tunnel.reason)

    def tunnel_targets(self, service: str, port: int) -> list[_Instance]:
        """Where a tunnel for ``service:port`` may connect: running instances of exactly
        that service that declare the port, each in a namespace of its own. An
        unisolated instance shares the node's loopback, where 127.0.0.1:port could be
        anything of the node: another node never reaches it through a tunnel."""
        with self._lock:
            return sorted(
                (
                    i
                    for i in self._instances.values()
                    if i.declares(service, port) and i.ns is not None
                ),
                key=lambda i: i.name,
            )

    # -- for tests and describe ------------------------------------------------------------

    def listeners(self, name: str) -> list[str]:
        """What the agent listens on for instance ``name`` (links and published ports)."""
        with self._lock:
            inst = self._instances.get(name)
            return [x.what for x in inst.listeners] if inst is not None else []

    def inbound(self) -> list[InboundTunnel]:
        with self._lock:
            return list(self._inbound)

    def outbound(self) -> list[OutboundTunnel]:
        with self._lock:
            return list(self._outbound.values())


def functools_partial(fn: Callable[..., None], *args: Any) -> Callable[[socket.socket], None]:
    return lambda conn: fn(*args, conn)
