"""A token-authorized NodeService call against a plain mTLS call, same run.

    python bench/bench_node.py [--calls 2000] [--threads 8] [--rounds 5] [--containers 20]
                                [--skip-memory]

Two servers are built the same way (grpc thread-pool server, the same NodeServicer,
runtime and TLS credentials): one with the authorization interceptor, one without.
Both answer ``GetNodeInfo`` with the same message. Authorized calls carry a token
minted beforehand (minting is the orchestrator's cost, not the node's). Rounds
alternate between the two servers so machine noise hits both alike. Prints p50/p99
latency and throughput for each, sequential and concurrent, and the ratios.
Goal: authorized p50 <= 1.3x plain p50.

Then the agent's resident memory: a real ``capstan node serve`` process with
``--containers`` running workloads (process runtime), idle. Goal: under 60 MB.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent import futures
from pathlib import Path

import grpc

from node.config import NodeConfig
from node.runtime.process import ProcessRuntime, ensure_busybox_image
from node.server import build_agent
from node.service import NodeServicer
from node.volumes import VolumeStore
from pki.authority import Authority
from pki.tokenkeys import TokenKeyStore
from pki.tokens import mint, request_digest
from protos import node_pb2, node_pb2_grpc, ops
from protos.wire.channel import NODE_SERVER_OPTIONS, client_credentials

TD = "bench.capstan"


def _setup(root: Path) -> tuple[Authority, TokenKeyStore, dict[str, object]]:
    authority = Authority.init(root / "pki", TD)
    keys = TokenKeyStore.open(root / "pki" / "token-keys")
    certs = root / "certs"
    certs.mkdir()
    issued = {}
    for kind, name in (("orchestrator", "orch"), ("node", "node-1")):
        it = authority.issue(kind, name, dns=["localhost"], ips=["127.0.0.1"])
        authority.write_issued(it, certs)
        issued[name] = it
    (root / "jwks.json").write_text(json.dumps(keys.jwks()))
    return authority, keys, issued


def _plain_server(runtime: ProcessRuntime, root: Path, node_id: str) -> tuple[grpc.Server, int]:
    certs = root / "certs"
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=32), options=NODE_SERVER_OPTIONS)
    servicer = NodeServicer(
        node_id=node_id,
        runtime=runtime,
        volumes=VolumeStore(root / "plain-volumes"),
        spool_dir=root / "spool",
    )
    node_pb2_grpc.add_NodeServiceServicer_to_server(servicer, server)
    creds = grpc.ssl_server_credentials(
        [((certs / "node-1.key").read_bytes(), (certs / "node-1.crt").read_bytes())],
        root_certificates=(certs / "ca.crt").read_bytes(),
        require_client_auth=True,
    )
    port = server.add_secure_port("127.0.0.1:0", creds)
    server.start()
    return server, port


def _calls(
    stub: node_pb2_grpc.NodeServiceStub, tokens: list[str] | None, n: int, threads: int
) -> tuple[list[float], float]:
    request = node_pb2.NodeInfoRequest()
    latencies: list[float] = []

    def one(i: int) -> float:
        meta = (("authorization", f"Bearer {tokens[i]}"),) if tokens else None
        t = time.perf_counter()
        stub.GetNodeInfo(request, metadata=meta)
        return time.perf_counter() - t

    start = time.perf_counter()
    if threads == 1:
        latencies = [one(i) for i in range(n)]
    else:
        with futures.ThreadPoolExecutor(threads) as pool:
            latencies = list(pool.map(one, range(n)))
    return latencies, n / (time.perf_counter() - start)


def _pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(p * len(values)))]


def _client(spec: dict[str, object]) -> None:
    """The calling side, in its own process (as the orchestrator is): the node's
    server threads do not share a GIL with the client's. Prints the series as JSON."""
    root = Path(str(spec["root"]))
    certs = root / "certs"
    keys = TokenKeyStore.open(root / "pki" / "token-keys")
    signer = keys.signer()
    orch_id, orch_cnf, node_id = str(spec["orch_id"]), str(spec["orch_cnf"]), str(spec["node_id"])
    creds = client_credentials(
        (certs / "orch.crt").read_bytes(),
        (certs / "orch.key").read_bytes(),
        (certs / "ca.crt").read_bytes(),
    )
    authed_stub = node_pb2_grpc.NodeServiceStub(
        grpc.secure_channel(f"127.0.0.1:{spec['authed_port']}", creds)
    )
    plain_stub = node_pb2_grpc.NodeServiceStub(
        grpc.secure_channel(f"127.0.0.1:{spec['plain_port']}", creds)
    )

    def tokens(n: int) -> list[str]:
        now = time.time()
        return [
            mint(
                signer,
                iss=orch_id,
                sub=orch_id,
                aud=node_id,
                op="node.info",
                res=ops.NODE_RESOURCE,
                cnf=orch_cnf,
                ttl=120,
                now=now,
            )
            for _ in range(n)
        ]

    calls, rounds = int(str(spec["calls"])), int(str(spec["rounds"]))
    # Warm both channels (TLS handshakes, HTTP/2 windows, thread pools).
    _calls(plain_stub, None, 200, 4)
    _calls(authed_stub, tokens(200), 200, 4)
    out: dict[str, dict[str, list[float]]] = {}
    for threads in (1, int(str(spec["threads"]))):
        series: dict[str, list[float]] = {
            "plain": [],
            "authed": [],
            "plain_tp": [],
            "authed_tp": [],
        }
        for _ in range(rounds):
            toks = tokens(calls)
            lat, tp = _calls(plain_stub, None, calls, threads)
            series["plain"] += lat
            series["plain_tp"].append(tp)
            lat, tp = _calls(authed_stub, toks, calls, threads)
            series["authed"] += lat
            series["authed_tp"].append(tp)
        out[str(threads)] = series
    print(json.dumps(out))


def latency_bench(args: argparse.Namespace, root: Path) -> None:
    _, _keys, issued = _setup(root)
    certs = root / "certs"
    node_id = issued["node-1"].identity.uri  # type: ignore[attr-defined]
    orch = issued["orch"]
    runtime = ProcessRuntime(node_id, root / "state")
    cfg = NodeConfig.load(
        None,
        listen="127.0.0.1:0",
        cert=certs / "node-1.crt",
        key=certs / "node-1.key",
        ca=certs / "ca.crt",
        jwks=root / "jwks.json",
        state_dir=root / "state",
        runtime="process",
        issuers=[orch.identity.uri],  # type: ignore[attr-defined]
    )
    agent = build_agent(cfg, runtime=runtime)
    plain, plain_port = _plain_server(runtime, root, node_id)
    spec = {
        "root": str(root),
        "orch_id": orch.identity.uri,  # type: ignore[attr-defined]
        "orch_cnf": orch.thumbprint,  # type: ignore[attr-defined]
        "node_id": node_id,
        "authed_port": agent.port,
        "plain_port": plain_port,
        "calls": args.calls,
        "rounds": args.rounds,
        "threads": args.threads,
    }
    try:
        result = subprocess.run(
            [sys.executable, __file__, "--client", json.dumps(spec)],
            capture_output=True,
            text=True,
            check=True,
        )
    finally:
        plain.stop(0)
        agent.stop(0)  # closes the runtime too; nothing was started on it
    out = json.loads(result.stdout)
    print(
        f"NodeService GetNodeInfo over mTLS, {args.calls} calls per series, {args.rounds} rounds, "
        f"client in its own process; load average {os.getloadavg()[0]:.2f}"
    )
    for threads, series in out.items():
        plain_lat, authed_lat = series["plain"], series["authed"]
        label = "sequential" if threads == "1" else f"{threads} threads"
        p50p, p99p = _pct(plain_lat, 0.5) * 1e6, _pct(plain_lat, 0.99) * 1e6
        p50a, p99a = _pct(authed_lat, 0.5) * 1e6, _pct(authed_lat, 0.99) * 1e6
        tpp, tpa = statistics.median(series["plain_tp"]), statistics.median(series["authed_tp"])
        print(f"  {label:>11}: plain    p50 {p50p:7.0f} us  p99 {p99p:7.0f} us  {tpp:8.0f} calls/s")
        print(f"  {label:>11}: token    p50 {p50a:7.0f} us  p99 {p99a:7.0f} us  {tpa:8.0f} calls/s")
        verdict = "ok" if p50a / p50p <= 1.3 else "ABOVE GOAL"
        print(
            f"  {label:>11}: ratio    p50 {p50a / p50p:5.2f}x (goal <= 1.3x: {verdict})  "
            f"p99 {p99a / p99p:5.2f}x  throughput {tpa / tpp:5.2f}x"
        )


def memory_bench(args: argparse.Namespace, root: Path) -> None:
    _, keys, issued = _setup(root)
    certs = root / "certs"
    orch = issued["orch"]
    node_id = issued["node-1"].identity.uri  # type: ignore[attr-defined]
    state = root / "state"
    seed = ProcessRuntime(node_id, state)
    ensure_busybox_image(seed)
    seed.close()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "orchestrator.cli",
            "node",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--cert",
            str(certs / "node-1.crt"),
            "--key",
            str(certs / "node-1.key"),
            "--ca",
            str(certs / "ca.crt"),
            "--jwks",
            str(root / "jwks.json"),
            "--state-dir",
            str(state),
            "--runtime",
            "process",
            "--issuer",
            orch.identity.uri,
        ],  # type: ignore[attr-defined]
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        port = int(line.rsplit(":", 1)[1].split()[0])
        creds = client_credentials(
            (certs / "orch.crt").read_bytes(),
            (certs / "orch.key").read_bytes(),
            (certs / "ca.crt").read_bytes(),
        )
        stub = node_pb2_grpc.NodeServiceStub(grpc.secure_channel(f"127.0.0.1:{port}", creds))
        signer = keys.signer()

        def tok(op: str, res: str, req: str | None = None) -> tuple[tuple[str, str]]:
            t = mint(
                signer,
                iss=orch.identity.uri,
                sub=orch.identity.uri,
                aud=node_id,
                op=op,
                res=res,  # type: ignore[attr-defined]
                cnf=orch.thumbprint,
                req=req,
                ttl=60,
                now=time.time(),
            )  # type: ignore[attr-defined]
            return (("authorization", f"Bearer {t}"),)

        for i in range(args.containers):
            spec = node_pb2.ContainerSpec(
                name=f"idle-{i}",
                workload_id=f"wl-{i}",
                image="local/busybox:1",
                command=["sleep", "3600"],
            )
            stub.CreateContainer(
                spec,
                metadata=tok(
                    "container.create", spec.name, request_digest(ops.request_fields(spec))
                ),
            )
            stub.StartContainer(
                node_pb2.ContainerRef(name=spec.name), metadata=tok("container.start", spec.name)
            )
        stub.ListContainers(node_pb2.ListRequest(), metadata=tok("container.list", "*"))
        time.sleep(2)  # idle: let the server settle before reading its RSS
        rss_kb = int(
            next(
                ln
                for ln in Path(f"/proc/{proc.pid}/status").read_text().splitlines()
                if ln.startswith("VmRSS")
            ).split()[1]
        )
        verdict = "ok" if rss_kb < 60 * 1024 else "ABOVE GOAL"
        what = f"agent RSS idle with {args.containers} running containers (process runtime)"
        print(f"{what}: {rss_kb / 1024:.1f} MB (goal < 60 MB: {verdict})")
        # What RSS is made of: pages only the agent maps (its heap and Python objects,
        # mostly), and pages it shares with other processes (library code).
        rollup = {
            ln.split(":")[0]: int(ln.split()[1])
            for ln in Path(f"/proc/{proc.pid}/smaps_rollup").read_text().splitlines()[1:]
        }
        private = rollup["Private_Clean"] + rollup["Private_Dirty"]
        shared = rollup["Shared_Clean"] + rollup["Shared_Dirty"]
        print(
            f"  of which private to the agent {private / 1024:.1f} MB, shared with other "
            f"processes {shared / 1024:.1f} MB (library code); PSS {rollup['Pss'] / 1024:.1f} MB"
        )
    finally:
        proc.terminate()
        proc.wait(10)
        rt = ProcessRuntime(node_id, state)
        for c in rt.list():
            rt.remove(c.name, force=True)
        rt.close()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--containers", type=int, default=20)
    parser.add_argument("--client", help=argparse.SUPPRESS)  # internal: the calling process
    parser.add_argument("--skip-memory", action="store_true", help="latency only")
    args = parser.parse_args()
    if args.client:
        _client(json.loads(args.client))
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        latency_bench(args, Path(tmp) / "latency")
    if not args.skip_memory:
        with tempfile.TemporaryDirectory() as tmp:
            memory_bench(args, Path(tmp) / "memory")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    sys.exit(main())
