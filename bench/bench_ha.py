"""Leader takeover under load, and store latency etcd next to SQLite.

A three-member etcd (Debian's binary), three ``capstan orchestrator serve --etcd``
processes and two node agents (``capstan node join``, process runtime), all real
processes on loopback. A load thread keeps applying (scaling one app between two
sizes) and asking every node for its info through the orchestrator (``Version``: a
token-carrying call to each node), with a client whose context names all three
orchestrators. Each trial SIGKILLs the leader and measures:

  takeover: from the kill to the first apply answered by the new leader;
  failed:   load calls that failed during the trial (the client retries inside);
  lost / duplicated: once settled, desired instances not running anywhere / running
            on more than one node.

The killed orchestrator is restarted before the next trial. Then the store itself:
put, get and a compare-and-swap transaction, each ``--ops`` times, on etcd (this
run's cluster) and on SQLite (a file), medians and the etcd/SQLite ratio.

    python bench/bench_ha.py [--trials 20] [--ops 300]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from orchestrator.client import ControlClient, ControlError
from orchestrator.context import Context
from orchestrator.store import Compare, Put, Store
from orchestrator.store.etcd import EtcdStore
from orchestrator.store.sqlite import SqliteStore
from tests.ha._cluster import HACluster, sleeper_app, start_cluster
from tests.waiting import wait_for

SIZES = (4, 6)


def _context(ha: HACluster) -> Context:
    issued = ha.authority.issue("user", "bench", role="admin")
    assert issued.key_pem is not None
    for what, data in (
        ("ca", ha.authority.trust_bundle()),
        ("cert", issued.chain_pem),
        ("key", issued.key_pem),
    ):
        (ha.root / f"bench.{what}").write_bytes(data)
    endpoints = ",".join(o.listen for o in ha.orchestrators)
    return Context(
        "bench", endpoints, ha.root / "bench.ca", ha.root / "bench.cert", ha.root / "bench.key"
    )


class Load:
    """Applies and node calls in a loop; counts what failed (after the client's retry)."""

    def __init__(self, context: Context) -> None:
        self.client = ControlClient(context, timeout=10)
        self.ok = 0
        self.failed = 0
        self.size = SIZES[0]
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)
        self.client.close()

    def counts(self) -> tuple[int, int]:
        with self._lock:
            return self.ok, self.failed

    def _run(self) -> None:
        i = 0
        while not self._stop.is_set():
            i += 1
            size = SIZES[i % 2]
            for call in (
                lambda size=size: self.client.apply(sleeper_app("load", size)),  # type: ignore[misc]
                self.client.version,
            ):
                try:
                    call()
                    with self._lock:
                        self.ok += 1
                        if call is not self.client.version:
                            self.size = size
                except ControlError:
                    with self._lock:
                        self.failed += 1
            self._stop.wait(0.2)


def _instances(ha: HACluster, client: ControlClient) -> tuple[int, int, int]:
    """(desired, lost, duplicated) for the load app once it has settled (or 60 s)."""
    result = (0, 0, 0)

    def settled() -> bool:
        nonlocal result
        try:
            wanted = {
                w.id for w in client.list_workloads(app="load") if w.desired == "running"
            }
        except ControlError:
            return False
        running = ha.running()
        lost = len([w for w in wanted if w not in running])
        dup = sum(len(running[w]) - 1 for w in wanted if w in running)
        result = (len(wanted), lost, dup)
        return lost == 0 and dup == 0 and set(running) >= wanted

    with contextlib.suppress(TimeoutError):
        wait_for(settled, 60, "the load app to settle")
    return result


def trial(ha: HACluster, load: Load, probe: ControlClient) -> dict[str, float]:
    old = ha.wait_leader()
    before = load.counts()
    victim = ha.by_address(old.address)
    victim.kill9()
    killed = time.monotonic()
    while True:
        try:
            probe.apply(sleeper_app("probe", 1))
            leader = ha.read_leader()
            if leader is not None and leader.epoch > old.epoch:
                break
        except ControlError:
            pass
        time.sleep(0.02)
    takeover = time.monotonic() - killed
    pki = ha.root / "pki"
    victim.start(pki, ha.endpoints)  # back as a follower for the next trial
    desired, lost, dup = _instances(ha, probe)
    after = load.counts()
    return {
        "takeover": takeover,
        "calls": (after[0] - before[0]) + (after[1] - before[1]),
        "failed": after[1] - before[1],
        "desired": desired,
        "lost": lost,
        "duplicated": dup,
    }


async def _latency(store: Store, ops: int) -> dict[str, float]:
    async def timed(fn: object) -> list[float]:
        out = []
        for i in range(ops):
            t = time.perf_counter()
            await fn(i)  # type: ignore[operator]
            out.append(time.perf_counter() - t)
        return out

    revisions: dict[int, int] = {}

    async def put(i: int) -> None:
        revisions[i] = await store.put(f"/bench/{i}", b"x" * 256)

    async def get(i: int) -> None:
        await store.get(f"/bench/{i}")

    async def txn(i: int) -> None:
        key = f"/bench/{i}"
        await store.txn([Compare.revision(key, "==", revisions[i])], [Put(key, b"y" * 256)])

    await store.open()
    try:
        return {
            "put": statistics.median(await timed(put)) * 1000,
            "get": statistics.median(await timed(get)) * 1000,
            "txn": statistics.median(await timed(txn)) * 1000,
        }
    finally:
        await store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--ops", type=int, default=300)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="capstan-bench-ha-") as tmp:
        root = Path(tmp)
        ha = start_cluster(root)
        try:
            ha.join("bench-n1", "127.0.0.81")
            ha.join("bench-n2", "127.0.0.82")
            context = _context(ha)
            load = Load(context)
            load.start()
            probe = ControlClient(context, timeout=10)
            results = []
            for n in range(args.trials):
                r = trial(ha, load, probe)
                results.append(r)
                print(
                    f"trial {n + 1:2d}: takeover {r['takeover']:.2f}s  calls {r['calls']:.0f} "
                    f"failed {r['failed']:.0f}  instances {r['desired']:.0f} "
                    f"lost {r['lost']:.0f} duplicated {r['duplicated']:.0f}",
                    flush=True,
                )
            load.stop()
            probe.close()
            times = sorted(r["takeover"] for r in results)
            print(
                f"\ntakeover over {len(times)} kills of the leader: median "
                f"{statistics.median(times):.2f}s, worst {times[-1]:.2f}s "
                f"(goal: median <= 3 s)"
            )
            print(
                f"load calls: {sum(r['calls'] for r in results):.0f}, "
                f"failed {sum(r['failed'] for r in results):.0f}; instances lost "
                f"{sum(r['lost'] for r in results):.0f}, duplicated "
                f"{sum(r['duplicated'] for r in results):.0f} (goal: 0 and 0)"
            )
            etcd = asyncio.run(
                _latency(EtcdStore(ha.endpoints, namespace="/bench-latency"), args.ops)
            )
        finally:
            ha.stop()
        sqlite = asyncio.run(_latency(SqliteStore(root / "latency.db"), args.ops))
    print(f"\nstore latency, median of {args.ops} each (ms): etcd (3 members) vs SQLite")
    for op in ("put", "get", "txn"):
        print(
            f"  {op:4s} etcd {etcd[op]:7.3f}  sqlite {sqlite[op]:7.3f}  "
            f"ratio {etcd[op] / sqlite[op]:6.2f}x"
        )


if __name__ == "__main__":
    main()
