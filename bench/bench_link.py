"""Request latency and throughput through a cross-node link, against direct loopback
TCP and a plain TLS socket pair, measured in the same run.

    python bench/bench_link.py [--requests 2000] [--megabytes 128] [--rounds 3] [--size 64]

What runs, each in a process of its own (as on real hosts, nothing shares a GIL):

- a server workload in a network namespace of its own (echo on 7000, sink on 7001);
- node-2's agent (the real NodeService server, authorization interceptor, link
  manager) reporting that workload as an instance of ``bench/app/db``;
- a client workload in a network namespace of its own, linking ``db``;
- node-1's agent, listening inside the client's namespace on db's link address, and
  carrying its connections over a tunnel to node-2 (mTLS, a single-use token minted
  with the orchestrator's key: sub node-1, aud node-2, op link.open).

The baselines use the same server and client code: the client connects straight to
the server over loopback TCP, and over a mutual-TLS socket pair (Python's ssl, the
nodes' own P-256 certificates). Rounds alternate between the three paths.

Latency: ``--requests`` sequential requests of ``--size`` bytes echoed back on one
connection (p50, p99). Throughput: ``--megabytes`` sent on one connection to the
sink, which answers when it has read them all. Goals: added latency through the link
at p50 no more than 1 ms over direct TCP; throughput at least 0.5x the TLS pair.
Exit status 1 when a goal is missed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

TD = "bench.capstan"
SERVICE = "bench/app/db"
ECHO, SINK = 7000, 7001
LINK_ADDRESS = "127.77.0.1"
SOURCE_IP, TARGET_IP, PLAIN_IP, TLS_IP = "127.0.0.81", "127.0.0.82", "127.0.0.83", "127.0.0.84"
CHUNK = 256 * 1024


# -- the workloads --------------------------------------------------------------------


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("closed early")
        buf += chunk
    return bytes(buf)


def _echo(conn: socket.socket) -> None:
    with conn:
        while data := conn.recv(65536):
            conn.sendall(data)


def _sink(conn: socket.socket) -> None:
    with conn:
        left = int.from_bytes(_recv_exact(conn, 8), "big")
        while left > 0:
            data = conn.recv(min(CHUNK, left))
            if not data:
                return
            left -= len(data)
        conn.sendall(b"ok")


def serve(host: str, tls: ssl.SSLContext | None) -> None:
    """Echo on ECHO, sink on SINK, a thread per connection; prints "ready"."""
    for port, handler in ((ECHO, _echo), (SINK, _sink)):
        listener = socket.create_server((host, port), backlog=128)

        def accept(listener: socket.socket = listener, handler: Any = handler) -> None:
            while True:
                conn, _ = listener.accept()
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                if tls is not None:
                    try:
                        conn = tls.wrap_socket(conn, server_side=True)
                    except (ssl.SSLError, OSError):
                        conn.close()
                        continue
                threading.Thread(target=handler, args=(conn,), daemon=True).start()

        threading.Thread(target=accept, daemon=True).start()
    print("ready", flush=True)
    threading.Event().wait()


def _connect(host: str, port: int, tls: ssl.SSLContext | None) -> socket.socket:
    deadline = time.monotonic() + 30
    while True:
        try:
            sock = socket.create_connection((host, port), timeout=30)
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if tls is not None:
        sock = tls.wrap_socket(sock, server_hostname=host)
    return sock


def measure(host: str, tls: ssl.SSLContext | None, requests: int, size: int, mb: int) -> None:
    """One round from the client's side; prints the figures as JSON."""
    payload = os.urandom(size)
    with _connect(host, ECHO, tls) as s:
        for _ in range(50):  # warm up (tunnel opened, caches hot)
            s.sendall(payload)
            _recv_exact(s, size)
        lat = []
        for _ in range(requests):
            t = time.perf_counter()
            s.sendall(payload)
            _recv_exact(s, size)
            lat.append(time.perf_counter() - t)
    total = mb * 1024 * 1024
    block = os.urandom(CHUNK)
    with _connect(host, SINK, tls) as s:
        t = time.perf_counter()
        s.sendall(total.to_bytes(8, "big"))
        sent = 0
        while sent < total:
            n = min(CHUNK, total - sent)
            s.sendall(block[:n])
            sent += n
        _recv_exact(s, 2)
        seconds = time.perf_counter() - t
    print(json.dumps({"lat": lat, "mbps": total / seconds / 1e6}), flush=True)


def _tls(certs: Path, name: str, server: bool) -> ssl.SSLContext:
    purpose = ssl.Purpose.CLIENT_AUTH if server else ssl.Purpose.SERVER_AUTH
    ctx = ssl.create_default_context(purpose, cafile=str(certs / "ca.crt"))
    ctx.load_cert_chain(str(certs / f"{name}.crt"), str(certs / f"{name}.key"))
    if server:
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


# -- a node agent (its runtime reports one workload, started by the bench) -----------------


class _OneInstance:
    """The runtime of a bench node: one running workload, a process of the bench."""

    name = "bench"

    def __init__(self, node_id: str, pid: int, net: Any) -> None:
        self.node_id = node_id
        self._pid = pid
        self._net = net

    def list(self) -> list[Any]:
        from node.runtime.base import ContainerState, ContainerStatus

        return [ContainerStatus("instance", "bench.app.x.0", "bench", ContainerState.RUNNING)]

    def net_spec(self, name: str) -> Any:
        return self._net if name == "instance" else None

    def close(self) -> None:
        pass


def agent(args: argparse.Namespace) -> None:
    from node.config import NodeConfig
    from node.runtime.base import LinkSpec, NetSpec, PortSpec
    from node.server import build_agent
    from protos import gateway_pb2

    root = Path(args.root)
    certs = root / "certs"
    spec = json.loads(args.spec)
    links = tuple(
        LinkSpec(x["service"], x["address"], tuple(x["ports"]), x["target"]) for x in spec["links"]
    )
    ports = tuple(PortSpec(p) for p in spec["ports"])
    net = NetSpec(f"/proc/{args.pid}/ns/net", True, spec["service"], ports, links)
    config = NodeConfig(
        listen=f"{spec['ip']}:0",
        cert=certs / f"{args.name}.crt",
        key=certs / f"{args.name}.key",
        ca=certs / "ca.crt",
        jwks=root / "jwks.json",
        state_dir=root / args.name,
        issuers=[spec["issuer"]],
    )
    node_id = f"spiffe://{TD}/node/{args.name}"
    built = build_agent(config, runtime=_OneInstance(node_id, args.pid, net))  # type: ignore[arg-type]
    print(f"listening {built.port}", flush=True)
    plan = gateway_pb2.LinkPlan(valid_until=time.time() + 3600)
    for line in sys.stdin:  # the plan, as JSON lines, from the bench
        msg = json.loads(line)
        for route in msg.get("routes", []):
            r = plan.routes.add(res=route["res"])
            r.endpoints.add(**route["endpoint"])
        for grant in msg.get("grants", []):
            plan.grants.add(**grant)
        built.links.set_plan(plan)
        built.links.poke()
        print("planned", flush=True)
    built.stop(0)  # stdin closed: the bench is done (unmounts what the agent mounted)


# -- the bench ----------------------------------------------------------------------------


def _spawn(*args: str, netns: bool = False) -> subprocess.Popen[str]:
    env = {**os.environ, "GRPC_VERBOSITY": "ERROR", "PYTHONPATH": str(REPO)}
    argv = [sys.executable, __file__, *args]

    def start() -> subprocess.Popen[str]:
        return subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env
        )

    if not netns:
        return start()
    from node.links._netns import in_new_network

    return in_new_network(start)


def _line(proc: subprocess.Popen[str], prefix: str) -> str:
    assert proc.stdout is not None
    while True:
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"process {proc.pid} ended before printing {prefix!r}")
        if line.startswith(prefix):
            return line.strip()


def _pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(p * len(values)))]


def run(args: argparse.Namespace) -> int:
    from pki.authority import Authority
    from pki.certs import load_pem_chain, thumbprint
    from pki.tokenkeys import TokenKeyStore
    from pki.tokens import mint

    procs: list[subprocess.Popen[str]] = []
    agents: list[subprocess.Popen[str]] = []
    with tempfile.TemporaryDirectory(prefix="capstan-bench-link-") as tmp:
        root = Path(tmp)
        authority = Authority.init(root / "pki", TD)
        keys = TokenKeyStore.open(root / "pki" / "token-keys")
        certs = root / "certs"
        certs.mkdir()
        for kind, name, ip in (
            ("orchestrator", "orch", "127.0.0.1"),
            ("node", "node-1", SOURCE_IP),
            ("node", "node-2", TARGET_IP),
        ):
            authority.write_issued(authority.issue(kind, name, ips=[ip, TLS_IP]), certs)
        (root / "jwks.json").write_text(json.dumps(keys.jwks()))
        issuer = f"spiffe://{TD}/orchestrator/orch"
        try:
            # The workloads: server and client each in a namespace of their own.
            server = _spawn("--role", "server", "--host", "127.0.0.1", netns=True)
            procs.append(server)
            _line(server, "ready")
            common = {"issuer": issuer, "links": []}
            target = _spawn(
                "--role",
                "agent",
                "--root",
                tmp,
                "--name",
                "node-2",
                "--pid",
                str(server.pid),
                "--spec",
                json.dumps({**common, "ip": TARGET_IP, "service": SERVICE, "ports": [ECHO, SINK]}),
            )
            procs.append(target)
            agents.append(target)
            target_port = int(_line(target, "listening").split()[1])
            client_host = _spawn("--role", "idle", netns=True)  # holds the client namespace
            procs.append(client_host)
            _line(client_host, "ready")
            link = {
                "service": "db",
                "address": LINK_ADDRESS,
                "ports": [ECHO, SINK],
                "target": SERVICE,
            }
            source = _spawn(
                "--role",
                "agent",
                "--root",
                tmp,
                "--name",
                "node-1",
                "--pid",
                str(client_host.pid),
                "--spec",
                json.dumps(
                    {
                        **common,
                        "ip": SOURCE_IP,
                        "service": "bench/app/web",
                        "ports": [],
                        "links": [link],
                    }
                ),
            )
            procs.append(source)
            agents.append(source)
            _line(source, "listening")
            cnf = thumbprint(load_pem_chain((certs / "node-1.crt").read_bytes())[0])
            node1, node2 = f"spiffe://{TD}/node/node-1", f"spiffe://{TD}/node/node-2"
            routes = []
            for port in (ECHO, SINK):
                res = f"{SERVICE}:{port}"
                token = mint(
                    keys.signer(),
                    iss=issuer,
                    sub=node1,
                    aud=node2,
                    op="link.open",
                    res=res,
                    cnf=cnf,
                    ttl=60,
                    now=time.time(),
                )
                routes.append(
                    {
                        "res": res,
                        "endpoint": {
                            "node_id": node2,
                            "address": f"{TARGET_IP}:{target_port}",
                            "token": token,
                            "token_expires_at": time.time() + 60,
                        },
                    }
                )
            for proc, plan in (
                (
                    target,
                    {
                        "grants": [
                            {"source_id": node1, "res": f"{SERVICE}:{p}"} for p in (ECHO, SINK)
                        ]
                    },
                ),
                (source, {"routes": routes}),
            ):
                assert proc.stdin is not None
                proc.stdin.write(json.dumps(plan) + "\n")
                proc.stdin.flush()
                _line(proc, "planned")
            # Baselines: the same server on the host's loopback, plain and with TLS.
            plain = _spawn("--role", "server", "--host", PLAIN_IP)
            procs.append(plain)
            _line(plain, "ready")
            tls = _spawn("--role", "server", "--host", TLS_IP, "--tls", tmp)
            procs.append(tls)
            _line(tls, "ready")

            paths = {
                "direct TCP": ("--host", PLAIN_IP),
                "TLS pair": ("--host", TLS_IP, "--tls", tmp),
                "link": ("--host", LINK_ADDRESS),
            }
            results: dict[str, dict[str, list[float]]] = {k: {"lat": [], "mbps": []} for k in paths}
            for _ in range(args.rounds):
                for name, where in paths.items():
                    if name == "link":  # from inside the linking workload's namespace
                        client = _client_in(client_host.pid, where, args)
                    else:
                        client = _spawn("--role", "client", *where, *_sizes(args))
                    out = json.loads(_line(client, "{"))
                    client.wait(60)
                    results[name]["lat"] += out["lat"]
                    results[name]["mbps"].append(out["mbps"])
        finally:
            for proc in procs:
                if proc in agents and proc.stdin is not None:
                    proc.stdin.close()  # the agent stops itself
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        proc.wait(15)
                proc.kill()
                proc.wait()
            _unmount_under(root)
    return _report(results, args)


def _unmount_under(root: Path) -> None:
    """Whatever an agent killed mid-way left mounted in the bench's directory."""
    with open("/proc/self/mounts") as fh:
        points = [line.split()[1] for line in fh]
    for point in sorted((p for p in points if p.startswith(str(root))), reverse=True):
        subprocess.run(["umount", "-l", point], check=False)


def _sizes(args: argparse.Namespace) -> tuple[str, ...]:
    return (
        "--requests",
        str(args.requests),
        "--size",
        str(args.size),
        "--megabytes",
        str(args.megabytes),
    )


def _client_in(pid: int, where: tuple[str, ...], args: argparse.Namespace) -> subprocess.Popen[str]:
    """A client process inside the network namespace of ``pid`` (the linking workload's):
    a child forked by a thread belongs to the namespace that thread entered."""
    from node.links._netns import Namespace

    result: list[subprocess.Popen[str]] = []
    ns = Namespace(f"/proc/{pid}/ns/net")

    def start() -> None:
        ns.enter()
        result.append(_spawn("--role", "client", *where, *_sizes(args)))

    t = threading.Thread(target=start)
    t.start()
    t.join()
    ns.close()
    return result[0]


def _report(results: dict[str, dict[str, list[float]]], args: argparse.Namespace) -> int:
    base = results["direct TCP"]
    tls = results["TLS pair"]
    link = results["link"]
    print(
        f"{args.requests} requests of {args.size} B x {args.rounds} rounds; "
        f"{args.megabytes} MiB per throughput round"
    )
    print("| path | p50 (ms) | p99 (ms) | throughput (MB/s) |")
    print("|---|---|---|---|")
    for name, r in results.items():
        print(
            f"| {name} | {_pct(r['lat'], 0.5) * 1e3:.3f} | {_pct(r['lat'], 0.99) * 1e3:.3f} "
            f"| {statistics.median(r['mbps']):.0f} |"
        )
    added = (_pct(link["lat"], 0.5) - _pct(base["lat"], 0.5)) * 1e3
    ratio_lat = _pct(link["lat"], 0.5) / _pct(base["lat"], 0.5)
    ratio_tls_lat = _pct(link["lat"], 0.5) / _pct(tls["lat"], 0.5)
    ratio_tput = statistics.median(link["mbps"]) / statistics.median(tls["mbps"])
    ratio_tput_tcp = statistics.median(link["mbps"]) / statistics.median(base["mbps"])
    print()
    print(f"link p50 / direct TCP p50: {ratio_lat:.2f}x (added {added:.3f} ms; goal <= 1 ms)")
    print(f"link p50 / TLS pair p50: {ratio_tls_lat:.2f}x")
    print(f"link throughput / TLS pair: {ratio_tput:.2f}x (goal >= 0.5x)")
    print(f"link throughput / direct TCP: {ratio_tput_tcp:.2f}x")
    ok = added <= 1.0 and ratio_tput >= 0.5
    print("goals met" if ok else "goal missed")
    return 0 if ok else 1


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--role", default="bench", choices=["bench", "server", "client", "agent", "idle"]
    )
    p.add_argument("--requests", type=int, default=2000)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--megabytes", type=int, default=128)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--tls", default="")
    p.add_argument("--root", default="")
    p.add_argument("--name", default="")
    p.add_argument("--pid", type=int, default=0)
    p.add_argument("--spec", default="{}")
    args = p.parse_args()
    if args.role == "server":
        serve(args.host, _tls(Path(args.tls) / "certs", "node-2", True) if args.tls else None)
        return 0
    if args.role == "client":
        tls = _tls(Path(args.tls) / "certs", "node-1", False) if args.tls else None
        measure(args.host, tls, args.requests, args.size, args.megabytes)
        return 0
    if args.role == "agent":
        agent(args)
        return 0
    if args.role == "idle":
        print("ready", flush=True)
        threading.Event().wait()
        return 0
    if os.geteuid() != 0:
        print("bench_link needs root (network namespaces)", file=sys.stderr)
        return 2
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
