"""What the process runtime's sandbox costs, against the unisolated runtime, same run.

    python bench/bench_sandbox.py [--instances 20] [--rounds 3]

Needs root (the sandbox's namespaces). Each round creates, starts (until the runtime
says it runs: the sandbox is built and the workload forked), stops and removes
``--instances`` instances of ``sleep`` on each runtime, alternating so machine noise
hits both alike; then it measures the resident memory one idle instance adds (the
init that stays in the sandbox included). Prints per-instance start and stop
latencies (median over rounds), their ratios sandbox/unisolated, and memory.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from node.runtime.base import ContainerSpec
from node.runtime.process import ProcessRuntime, ensure_busybox_image

IMAGE = "local/busybox:1"


def one_round(rt: ProcessRuntime, n: int, tag: str) -> tuple[float, float]:
    names = [f"{tag}-{i}" for i in range(n)]
    for name in names:
        rt.create(ContainerSpec(name=name, workload_id=f"bench.app.{name}", image=IMAGE,
                                command=("sleep", "600"), cpu=0.1, memory=32 << 20))
    t0 = time.perf_counter()
    for name in names:
        rt.start(name)
    started = time.perf_counter() - t0
    t0 = time.perf_counter()
    for name in names:
        rt.stop(name, timeout=5)
    stopped = time.perf_counter() - t0
    for name in names:
        rt.remove(name)
    return started / n, stopped / n


def session_rss(sid: int) -> int:
    """Resident bytes of every process whose session is ``sid`` (field 6 of stat)."""
    page = os.sysconf("SC_PAGE_SIZE")
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            raw = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = raw[raw.rfind(")") + 2:].split()
        if int(fields[3]) == sid:
            total += int(fields[21]) * page
    return total


def rss_of_instance(rt: ProcessRuntime) -> int:
    rt.create(ContainerSpec(name="rss", workload_id="bench.app.rss", image=IMAGE,
                            command=("sleep", "600")))
    pid = rt.start("rss").pid
    assert pid is not None
    time.sleep(0.5)
    total = session_rss(pid)
    rt.remove("rss", force=True)
    return total


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--instances", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        sandbox = ProcessRuntime("bench-sandbox", Path(tmp) / "s", isolated=True)
        plain = ProcessRuntime("bench-plain", Path(tmp) / "p", isolated=False)
        try:
            for rt in (sandbox, plain):
                ensure_busybox_image(rt, IMAGE)
            results: dict[str, list[tuple[float, float]]] = {"sandbox": [], "unisolated": []}
            for r in range(args.rounds):
                results["sandbox"].append(one_round(sandbox, args.instances, f"s{r}"))
                results["unisolated"].append(one_round(plain, args.instances, f"p{r}"))
            rss = {"sandbox": rss_of_instance(sandbox), "unisolated": rss_of_instance(plain)}
        finally:
            sandbox.close()
            plain.close()
    med = {k: (statistics.median(s for s, _ in v), statistics.median(t for _, t in v))
           for k, v in results.items()}
    for kind, (start, stop) in med.items():
        print(f"{kind:11} start {start * 1000:7.1f} ms  stop {stop * 1000:7.1f} ms  "
              f"idle instance {rss[kind] / 2**20:5.1f} MiB")
    print(f"ratio sandbox/unisolated: start {med['sandbox'][0] / med['unisolated'][0]:.1f}x, "
          f"stop {med['sandbox'][1] / med['unisolated'][1]:.1f}x, "
          f"memory {rss['sandbox'] / rss['unisolated']:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
