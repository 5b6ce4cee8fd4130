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

import hashlib
import ipaddress

from protos import control_pb2, node_pb2, topology_pb2

LINK_OP = "link.open"


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
