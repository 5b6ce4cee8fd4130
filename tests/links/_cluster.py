"""A three-node cluster (real orchestrator, real mTLS on loopback, real namespaces) with
the shop application: ``db`` answers HTTP on 5432 (its instance name as the body)
and echoes on 7000; ``web`` links ``db``. Helpers reach into an instance's own network
namespace to connect the way its workload would."""

from __future__ import annotations

import contextlib
import socket
import time

from node.agent import JoinedNode
from node.errors import NodeError
from node.links._netns import Namespace
from orchestrator.links import link_address
from protos import control_pb2, topology_pb2
from tests.security.conftest import Cluster, join_node
from tests.waiting import wait_for

DB_ADDRESS = link_address("acme", "shop", "db")
NODE_IPS = {"node-1": "127.0.0.51", "node-2": "127.0.0.52", "node-3": "127.0.0.53"}


def shop(
    *,
    db_replicas: int = 1,
    web_replicas: int = 3,
    links: bool = True,
    app: str = "shop",
    tenant: str = "acme",
) -> control_pb2.ApplyRequest:
    db_script = (
        "D=/tmp/db-$$; mkdir -p $D && echo db-answer > $D/index.html && httpd -p 5432 -h $D && "
        "exec nc -ll -p 7000 -e cat"
    )
    web = topology_pb2.Service(
        name="web",
        image="local/busybox:1",
        command=["sleep", "600"],
        replicas=web_replicas,
        links=["db"] if links else [],
        ports=[topology_pb2.ServicePort(port=8080, protocol=topology_pb2.PROTOCOL_TCP)],
    )
    db = topology_pb2.Service(
        name="db",
        image="local/busybox:1",
        command=["sh", "-c", db_script],
        replicas=db_replicas,
        ports=[
            topology_pb2.ServicePort(port=5432, protocol=topology_pb2.PROTOCOL_TCP),
            topology_pb2.ServicePort(port=7000, protocol=topology_pb2.PROTOCOL_TCP),
        ],
    )
    return control_pb2.ApplyRequest(
        app=topology_pb2.Application(name=app, tenant=tenant, services=[web, db])
    )


def start(c: Cluster, runtime: str = "process") -> None:
    for name, ip in NODE_IPS.items():
        join_node(c, name, ip, runtime=runtime)
    wait_for(
        lambda: (
            len(
                [
                    n
                    for n in c.admin().ListNodes(control_pb2.ListNodesRequest()).nodes
                    if n.state == "ready"
                ]
            )
            == 3
        ),
        what="three ready nodes",
    )


def instances(
    c: Cluster, service: str, app: str = "shop", tenant: str = "acme"
) -> dict[str, tuple[JoinedNode, str]]:
    """Running instances of ``service``: container name -> (its node, its netns)."""
    out = {}
    for node in c.nodes.values():
        rt = node.agent.runtime
        for ct in rt.list():
            if ct.state != "running" or not ct.name.startswith(f"{tenant}.{app}.{service}."):
                continue
            net = rt.net_spec(ct.name)
            if net is not None:
                out[ct.name] = (node, net.netns)
    return out


def node_of(c: Cluster, container: str) -> str:
    for name, node in c.nodes.items():
        if any(ct.name == container for ct in node.agent.runtime.list()):
            return name
    raise KeyError(container)


def connect_from(netns: str, host: str, port: int, timeout: float = 5.0) -> socket.socket:
    """A TCP connection made inside the namespace ``netns``, as its workload would."""
    ns = Namespace(netns)
    try:
        sock = ns.socket()
    finally:
        ns.close()
    sock.settimeout(timeout)
    sock.connect((host, port))
    return sock


def http_from(netns: str, host: str = DB_ADDRESS, port: int = 5432) -> bytes:
    with connect_from(netns, host, port) as s:
        s.sendall(b"GET / HTTP/1.0\r\nHost: db\r\n\r\n")
        out = b""
        while chunk := s.recv(65536):
            out += chunk
    return out


def answers(netns: str) -> bool:
    try:
        return b"db-answer" in http_from(netns)
    except OSError:
        return False


def wait_tunnels(node: JoinedNode, count: int, timeout: float = 20.0) -> float:
    """Wait until ``node`` carries ``count`` inbound tunnels; seconds it took."""
    t0 = time.monotonic()
    wait_for(lambda: len(node.agent.links.inbound()) == count, timeout, f"{count} tunnels")
    return time.monotonic() - t0


def stop_node(node: JoinedNode) -> None:
    """Stop a node and remove its containers (the orchestrator may be removing some)."""
    for ct in node.agent.runtime.list():
        with contextlib.suppress(NodeError):
            node.agent.runtime.remove(ct.name, force=True)
    node.stop(0)
