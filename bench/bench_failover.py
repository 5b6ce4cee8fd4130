"""Failure detection and replacement times, and false positives under load.

An in-process orchestrator and ``--nodes`` node agents as real ``capstan node join``
processes (process runtime, mTLS on 127.0.0.5x). Each run SIGKILLs the agent of the
node running the most instances and measures, from the kill:

  (a) until the orchestrator declares the node dead (its ``node.dead`` audit time);
  (b) until every instance it ran is running on another node.

The agent is then restarted (its stale copies get fenced) before the next run.
Then both cores (every core, by default) are loaded with busy loops for
``--fp-seconds`` while nothing fails: any ``node.dead`` is a false positive; the
longest heartbeat silence seen is printed too.

    python bench/bench_failover.py [--runs 5] [--fp-seconds 120]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from protos import control_pb2
from tests.control_api.conftest import Running, stop_orchestrator
from tests.failover._agents import (
    Agent,
    audit,
    join_agent,
    node_state,
    node_states,
    on_loop,
    restart_agent,
    sleeper_app,
    start_orch,
    wait_until,
    workloads,
)


def _running_elsewhere(orch: Running, ids: set[str], victim: str) -> bool:
    return all(w.node != victim and w.state == "running" for w in workloads(orch) if w.id in ids)


def _dead_at(orch: Running, victim: str, after: float) -> float | None:
    for e in reversed(audit(orch)):
        if e["event"] == "node.dead" and e.get("node") == victim and float(e["at"]) >= after:
            return float(e["at"])
    return None


def one_run(
    orch: Running, root: Path, agents: dict[str, Agent], replicas: int
) -> tuple[float, float]:
    counts: dict[str, int] = {}
    for w in workloads(orch):
        counts[w.node] = counts.get(w.node, 0) + 1
    victim = max(sorted(counts), key=lambda n: counts[n])
    ids = {w.id for w in workloads(orch) if w.node == victim}
    agent = agents[victim]
    killed = time.time()
    agent.kill9()
    dead: float | None = None
    replaced: float | None = None
    deadline = time.monotonic() + 60
    while replaced is None or dead is None:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{victim}: not replaced within 60 s")
        if dead is None and node_state(orch, victim) == "dead":
            dead = _dead_at(orch, victim, killed)
        if replaced is None and _running_elsewhere(orch, ids, victim):
            replaced = time.time()
        time.sleep(0.01)
    restart_agent(orch, root, agent)
    wait_until(lambda: node_state(orch, victim) == "ready", 30, f"{victim} back")
    wait_until(lambda: not agent.containers(), 30, f"{victim} fenced")
    wait_until(
        lambda: sum(1 for w in workloads(orch) if w.state == "running") == replicas,
        60,
        "all running again",
    )
    return dead - killed, replaced - killed


def false_positives(orch: Running, seconds: float, burners: int) -> tuple[int, float]:
    """(node.dead events, longest heartbeat silence in s) over ``seconds`` of full load."""
    loop_code = "while True: pass"
    procs = [subprocess.Popen([sys.executable, "-c", loop_code]) for _ in range(burners)]
    start = time.time()
    worst = 0.0
    try:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            now = time.time()

            def silences(now: float = now) -> list[float]:
                return [now - v.last_seen for v in orch.orch.reconciler.tracker.nodes.values()]

            worst = max([worst, *on_loop(orch, silences)])
            time.sleep(0.05)
    finally:
        for p in procs:
            p.kill()
            p.wait()
    dead = [e for e in audit(orch) if e["event"] == "node.dead" and float(e["at"]) >= start]
    return len(dead), worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--replicas", type=int, default=6)
    parser.add_argument("--heartbeat", type=float, default=1.0)
    parser.add_argument("--grace", type=float, default=3.0)
    parser.add_argument("--fp-seconds", type=float, default=120.0)
    parser.add_argument("--burners", type=int, default=os.cpu_count() or 2)
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="capstan-bench-failover-"))
    orch = start_orch(root / "orch", heartbeat=args.heartbeat, grace=args.grace)
    agents: dict[str, Agent] = {}
    try:
        for i in range(1, args.nodes + 1):
            agents[f"node-{i}"] = join_agent(orch, root, f"node-{i}", f"127.0.0.5{i}")
        wait_until(
            lambda: list(node_states(orch).values()) == ["ready"] * args.nodes, 30, "nodes ready"
        )
        orch.control().Apply(control_pb2.ApplyRequest(app=sleeper_app("bench", args.replicas)))
        wait_until(
            lambda: sum(1 for w in workloads(orch) if w.state == "running") == args.replicas,
            60,
            "instances running",
        )
        print(
            f"heartbeat {args.heartbeat:g}s (jitter +-10%), grace {args.grace:g}s, "
            f"{args.nodes} nodes, {args.replicas} instances, process runtime"
        )
        detect, replace = [], []
        for run in range(1, args.runs + 1):
            d, r = one_run(orch, root, agents, args.replicas)
            detect.append(d)
            replace.append(r)
            print(f"run {run}: declared dead after {d:.2f}s, all running elsewhere after {r:.2f}s")
        print(
            f"(a) kill -> dead:              median {statistics.median(detect):.2f}s, "
            f"worst {max(detect):.2f}s (goal <= 3 s)"
        )
        print(
            f"(b) kill -> running elsewhere: median {statistics.median(replace):.2f}s, "
            f"worst {max(replace):.2f}s (goal <= 6 s)"
        )
        if args.fp_seconds > 0:
            fp, worst = false_positives(orch, args.fp_seconds, args.burners)
            print(
                f"false positives over {args.fp_seconds:g}s with {args.burners} CPU burners: {fp} "
                f"(longest heartbeat silence {worst:.2f}s)"
            )
    finally:
        for agent in agents.values():
            agent.cleanup()
        stop_orchestrator(orch)


if __name__ == "__main__":
    main()
