"""Links between services (DESIGN §10): what each instance is given, and the link plan
each node gets.

An instance of a service that links to ``S`` sees ``S`` at a loopback address of
its own namespace, derived from ``tenant/app/S`` alone, so every instance of every
service linking to ``S`` uses the same one (and, on a node that cannot give an
instance its own namespace, one listener serves them all), plus ``S_HOST`` and
``S_PORT`` (the first TCP port ``S`` declares) in its environment.

The plan of node ``N``: for each ``tenant/app/S:port`` that an instance placed on
``N`` links to, the other nodes running an instance of ``S``, each with a
single-use token (sub = N bound to its certificate, aud = that node, op =
link.open, res = the link); and for each of ``N``'s own instances of a linked
service, which nodes may open tunnels to it (grants). A plan is valid for
``VALID_FOR`` seconds and is renewed (with fresh tokens) every ``REFRESH``
seconds; a grant left out of a newer plan is withdrawn at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import ipaddress
import logging
from collections.abc import Callable
from dataclasses import dataclass

from orchestrator.audit import AuditLog
from orchestrator.delegation import may_delegate
from orchestrator.liveness import Tracker
from orchestrator.minter import Minter
from orchestrator.state import ClusterState
from protos import control_pb2, gateway_pb2, node_pb2, topology_pb2

LINK_OP = "link.open"

log = logging.getLogger("capstan.orchestrator")


def link_address(tenant: str, app: str, service: str) -> str:
    """A loopback address for ``tenant/app/service``, outside 127.0.0.0/16 (where
    nodes of a local cluster listen) and never a network or broadcast-looking one."""
    digest = hashlib.sha256(f"{tenant}/{app}/{service}".encode()).digest()
    value = int.from_bytes(digest[:4], "big")
    second = 1 + value % 254  # 127.1.0.0 - 127.254.255.254
    third = (value >> 8) % 256
    fourth = 1 + (value >> 16) % 254
    return str(ipaddress.IPv4Address(f"127.{second}.{third}.{fourth}"))


def env_name(service: str) -> str:
    return service.upper().replace("-", "_")


def service_ref(tenant: str, app: str, service: str) -> str:
    return f"{tenant}/{app}/{service}"


def tcp_ports(service: topology_pb2.Service) -> list[int]:
    return [p.port for p in service.ports if p.protocol != topology_pb2.PROTOCOL_UDP]


def link_specs(
    tenant: str, app: topology_pb2.Application, service: topology_pb2.Service
) -> list[node_pb2.LinkSpec]:
    by_name = {s.name: s for s in app.services}
    out = []
    for name in service.links:
        target = by_name.get(name)
        if target is None or not tcp_ports(target):
            continue  # the loader refuses both; an old stored app may still hold one
        out.append(
            node_pb2.LinkSpec(
                service=name,
                address=link_address(tenant, app.name, name),
                ports=tcp_ports(target),
                target=service_ref(tenant, app.name, name),
            )
        )
    return out


def link_env(links: list[node_pb2.LinkSpec]) -> list[node_pb2.EnvVar]:
    env = []
    for link in links:
        env.append(node_pb2.EnvVar(name=f"{env_name(link.service)}_HOST", value=link.address))
        env.append(node_pb2.EnvVar(name=f"{env_name(link.service)}_PORT", value=str(link.ports[0])))
    return env


def net_fields(
    w: control_pb2.Workload, app: topology_pb2.Application, service: topology_pb2.Service
) -> tuple[str, list[node_pb2.PortSpec], list[node_pb2.LinkSpec]]:
    """The data-plane fields of a workload's container spec."""
    ports = [
        node_pb2.PortSpec(port=p.port, publish=p.publish)
        for p in service.ports
        if p.protocol != topology_pb2.PROTOCOL_UDP
    ]
    return service_ref(w.tenant, w.app, w.service), ports, link_specs(w.tenant, app, service)


# -- the plan of every node ------------------------------------------------------------------

TOKEN_TTL = 30.0  # a tunnel token's life: enough to be used, short enough to be worthless later
REFRESH = 10.0  # fresh tokens and a renewed plan this often, even when nothing changed
VALID_FOR = 30.0  # grants lapse this long after the last plan (orchestrator gone: tunnels end)
_NO_LINKS: tuple[object, ...] = ((), ())  # the shape of a plan with no route and no grant


@dataclass(frozen=True)
class _Topology:
    """Who links where, in names: node name -> res -> remote node names; and the
    grants: node name -> {(source node name, res)}."""

    routes: dict[str, dict[str, list[str]]]
    grants: dict[str, set[tuple[str, str]]]


class LinkPlanner:
    """Computes every node's link plan from the stored records and sends it down the
    node's Report stream when it changed, when it reconnected, and every ``REFRESH``
    seconds. Grants are audited when given and when withdrawn (``capstan audit
    who-can`` lists them); tunnel tokens are not audited one by one."""

    def __init__(
        self,
        *,
        state: ClusterState,
        tracker: Tracker,
        minter: Minter,
        audit: AuditLog,
        send: Callable[[str, gateway_pb2.GatewayMessage], bool],
        stream_of: Callable[[str], object | None],
        clock: Callable[[], float],
        token_ttl: float = TOKEN_TTL,
        refresh: float = REFRESH,
        valid_for: float = VALID_FOR,
    ) -> None:
        self._state = state
        self._tracker = tracker
        self._minter = minter
        self._audit = audit
        self._send = send
        self._stream_of = stream_of
        self._clock = clock
        self.token_ttl = token_ttl
        self.refresh = refresh
        self.valid_for = valid_for
        # node name -> (what was sent, to which stream object, when)
        self._sent: dict[str, tuple[tuple[object, ...], object, float]] = {}
        self._granted: set[tuple[str, str, str]] = set()  # (source, target, res)
        self._wake = asyncio.Event()
        self._topology: tuple[int, _Topology] | None = None  # (state.changes, topology)

    def wake(self) -> None:
        self._wake.set()

    async def run(self, interval: float = 0.25) -> None:
        """Publish plans every ``interval`` and at once when woken (an apply, a report)."""
        while True:
            try:
                await self.publish()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("link plans not published")
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval):
                    await self._wake.wait()

    def topology(self) -> _Topology:
        """Who links where, recomputed only when a record changed since the last time
        (``ClusterState.changes``): it runs four times a second and on every wake."""
        if self._topology is not None and self._topology[0] == self._state.changes:
            return self._topology[1]
        topo = self._compute()
        self._topology = (self._state.changes, topo)
        return topo

    def _compute(self) -> _Topology:
        # Looks, not copies: nothing here is changed, and a copy of every record four
        # times a second was most of the orchestrator's time at 1,000 nodes.
        apps = {(a.app.tenant, a.app.name): a.app for a in self._state.peek_apps()}
        # First from the applications alone: the services that link and the ones
        # linked to. Only their instances matter; with no link at all (the common
        # case) no workload is looked at.
        linking_services: dict[tuple[str, str, str], topology_pb2.Service] = {}
        targets: set[str] = set()
        for (tenant, name), app in apps.items():
            for service in app.services:
                if service.links:
                    linking_services[(tenant, name, service.name)] = service
                    targets.update(link.target for link in link_specs(tenant, app, service))
        if not linking_services:
            return _Topology({}, {})
        nodes = {n.name: n for n in self._state.peek_nodes()}

        def usable(name: str) -> bool:
            n = nodes.get(name)
            return n is not None and n.state == "ready"

        running: dict[str, set[str]] = {}  # service ref -> node names with a running instance
        linking: list[tuple[control_pb2.Workload, topology_pb2.Service]] = []
        for w in self._state.peek_workloads():
            if w.desired != "running" or not w.node or not usable(w.node):
                continue
            ref = service_ref(w.tenant, w.app, w.service)
            if w.state == "running" and ref in targets:
                running.setdefault(ref, set()).add(w.node)
            linker = linking_services.get((w.tenant, w.app, w.service))
            if linker is not None:
                linking.append((w, linker))
        routes: dict[str, dict[str, list[str]]] = {}
        grants: dict[str, set[tuple[str, str]]] = {}
        for w, service in linking:
            app = apps[(w.tenant, w.app)]
            for link in link_specs(w.tenant, app, service):
                remote = sorted(
                    m
                    for m in running.get(link.target, ())
                    if m != w.node and may_delegate(nodes[w.node], nodes[m])
                )
                for port in link.ports:
                    res = f"{link.target}:{port}"
                    routes.setdefault(w.node, {})[res] = remote
                    for m in remote:
                        grants.setdefault(m, set()).add((w.node, res))
        return _Topology(routes, grants)

    async def publish(self) -> None:
        topo = self.topology()
        now = self._clock()
        await self._audit_grants(topo)
        for node in self._state.peek_nodes():  # read only: plans are built from them
            stream = self._stream_of(node.name)
            if stream is None:
                continue
            routes = topo.routes.get(node.name, {})
            grants = topo.grants.get(node.name, set())
            last = self._sent.get(node.name)
            if not routes and not grants:
                # Told on this stream that it has none: nothing in it expires. (Without
                # links, the common case, this is every node on every pass: at 1,000
                # nodes the shape built and compared for each was most of the cost.)
                if last is not None and last[0] is _NO_LINKS and last[1] is stream:
                    continue
                shape: tuple[object, ...] = _NO_LINKS
            else:
                shape = (
                    tuple(sorted((r, tuple(ms)) for r, ms in routes.items())),
                    tuple(sorted(grants)),
                )
            fresh = last is not None and now - last[2] < self.refresh
            if last is not None and last[0] == shape and last[1] is stream and fresh:
                continue
            message = await self._plan(node, routes, grants, now)
            if message is not None and self._send(node.name, message):
                self._sent[node.name] = (shape, stream, now)

    async def _plan(
        self,
        node: control_pb2.NodeRecord,
        routes: dict[str, list[str]],
        grants: set[tuple[str, str]],
        now: float,
    ) -> gateway_pb2.GatewayMessage | None:
        plan = gateway_pb2.LinkPlan(valid_until=now + self.valid_for)
        thumbprint = self._tracker.thumbprint(node.name)
        for res, targets in sorted(routes.items()):
            route = plan.routes.add(res=res)
            for name in targets:
                target = self._state.node(name)
                if target is None or not thumbprint:
                    continue
                token = await self._minter.mint(
                    sub=node.id,
                    cnf=thumbprint,
                    aud=target.id,
                    op=LINK_OP,
                    res=res,
                    ttl=self.token_ttl,
                    why=f"link: {node.name} -> {res} on {target.name}",
                    audit=False,
                )
                route.endpoints.add(
                    node_id=target.id,
                    address=target.address,
                    token=token,
                    token_expires_at=now + self.token_ttl,
                )
        for source_name, res in sorted(grants):
            source = self._state.node(source_name)
            if source is not None:
                plan.grants.add(source_id=source.id, res=res)
        return gateway_pb2.GatewayMessage(sent_at=now, links=plan)

    async def _audit_grants(self, topo: _Topology) -> None:
        now_granted = {
            (source, target, res) for target, pairs in topo.grants.items() for source, res in pairs
        }
        for source, target, res in sorted(now_granted - self._granted):
            s, t = self._state.node(source), self._state.node(target)
            await self._audit.record(
                "link.granted",
                sub=s.id if s else source,
                aud=t.id if t else target,
                op=LINK_OP,
                res=res,
                source=source,
                target=target,
                why=f"link: {source} -> {res} on {target}",
            )
        for source, target, res in sorted(self._granted - now_granted):
            await self._audit.record(
                "link.withdrawn", source=source, target=target, op=LINK_OP, res=res
            )
        self._granted = now_granted
