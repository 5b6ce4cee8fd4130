"""Costs of the side-door fixes (docs/peers-and-streams.md), each against a baseline
measured in the same run:

1. Reading an application's last 20 events from an audit log of N entries: the
   application index (``AuditLog.app_events``) against reading the whole log and
   filtering (what GetApp did before), on the real SQLite store.
2. How long a held stream outlives its grant: a real gRPC server whose calls are
   held by ``protos.wire.grants.Reaper``; the injected clock passes the grant's end
   and the client's wait for the end of its stream is timed. Baseline: the promise,
   ``END_WITHIN``.

    python bench/bench_gate.py [--sizes 1000,10000] [--streams 20]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import threading
import time
from concurrent import futures
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import grpc

from orchestrator._events import of_app
from orchestrator.audit import AuditLog
from orchestrator.store.sqlite import SqliteStore
from protos.wire.grants import END_WITHIN, Grant, Reaper
from tests.waiting import FakeClock


async def _audit_reads(size: int, root: Path) -> tuple[float, float, int]:
    store = SqliteStore(root / f"audit-{size}.db")
    await store.open()
    log = AuditLog(store)
    for i in range(size):
        if i % 50 == 0:
            await log.record("workload.placed", workload=f"acme.shop.web.{i}", node="n1")
        else:
            await log.record("noise", n=i)
    rounds = 5
    start = time.perf_counter()
    for _ in range(rounds):
        old = [e for e in await log.entries() if of_app(e, "acme", "shop")][-20:]
    whole = (time.perf_counter() - start) / rounds
    start = time.perf_counter()
    for _ in range(rounds):
        new = await log.app_events("acme", "shop", limit=20)
    indexed = (time.perf_counter() - start) / rounds
    assert [e["seq"] for e in old] == [e["seq"] for e in new]
    await store.close()
    return whole, indexed, len(new)


def _stream_ends(streams: int) -> list[float]:
    clock = FakeClock(time.time())
    reaper = Reaper(clock=clock)
    held = threading.Semaphore(0)

    def follow(_request: bytes, context: grpc.ServicerContext) -> object:
        lease = reaper.hold(context, Grant(clock() + 30))
        context.add_callback(lease.release)
        held.release()
        while not lease.wait(3600):  # a silent follow: nothing to send
            pass
        yield b""  # pragma: no cover - the call has ended

    handler = grpc.method_handlers_generic_handler(
        "bench.Grants", {"Follow": grpc.unary_stream_rpc_method_handler(follow)}
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=streams + 4), handlers=[handler])
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    call = channel.unary_stream("/bench.Grants/Follow")
    ended: list[float] = []
    lock = threading.Lock()

    def client() -> None:
        try:
            for _ in call(b""):
                pass
        except grpc.RpcError as exc:
            assert exc.code() == grpc.StatusCode.UNAUTHENTICATED
        with lock:
            ended.append(time.monotonic())

    threads = [threading.Thread(target=client) for _ in range(streams)]
    for t in threads:
        t.start()
    for _ in range(streams):
        held.acquire()
    expired_at = time.monotonic()
    clock.advance(31)
    for t in threads:
        t.join()
    server.stop(0)
    reaper.stop()
    return [t - expired_at for t in ended]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000")
    parser.add_argument("--streams", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        print("1. an application's last 20 events, audit log of N entries")
        print(f"{'N':>8} {'whole log (ms)':>15} {'index (ms)':>11} {'ratio':>7}")
        for size in (int(s) for s in args.sizes.split(",")):
            whole, indexed, _ = asyncio.run(_audit_reads(size, Path(tmp)))
            print(f"{size:>8} {whole * 1e3:>15.2f} {indexed * 1e3:>11.2f} {whole / indexed:>7.1f}x")
    lags = _stream_ends(args.streams)
    print(f"\n2. {args.streams} held streams: time from the grant's end to the stream's end")
    p50, worst = statistics.median(lags), max(lags)
    print(f"median {p50 * 1e3:.0f} ms, worst {worst * 1e3:.0f} ms; promise {END_WITHIN:.0f} s")
    print(f"worst / promise = {worst / END_WITHIN:.2f}")


if __name__ == "__main__":
    main()
