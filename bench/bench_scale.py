"""How the orchestrator's cost grows with the cluster: hollow nodes, 100 to 1,000.

    python bench/bench_scale.py --nodes 100,250,500,1000 [--per-process 500]
        [--idle-seconds 20] [--plot docs/scale.png]

For each N, a fresh real orchestrator (``capstan orchestrator serve``, its own
process, SQLite store, heartbeat 1 s, grace ``--grace``, 3 s by default) and N hollow nodes
(bench/hollow.py: real join, real mTLS Report streams, real node authorization,
recording runtime), ``--per-process`` of them per process. Then, in order:

1. **idle**: the orchestrator's CPU (% of one core, from /proc over
   ``--idle-seconds``) and RSS with every node heartbeating at 1 Hz;
2. **apply** of 10 x N instances (10 applications of N replicas, spread): placements
   per second (apply to the last ``workload.placed`` audit entry) and the time until
   every instance runs on its node (the hollow runtimes hold them), seen in the
   applications' summaries (ListApps: desired = running for each);
3. **failure**: 5% of the nodes are killed at once (server and stream stopped, as a
   crash); time until all are declared dead (their ``node.dead`` audit entries) and
   until all their instances run elsewhere (ListNodes: no instance left on a victim,
   and ListApps: every instance running); a ``node.dead`` for any other node is a
   false positive. Until this round both waits polled the full list of 10 x N
   records (every 0.1 s after the kill): at 1,000 nodes that list was itself much
   of the orchestrator's load, and delayed what it measured;
4. **revocation** of one node: from the RevokeNode call until each other node's
   deny list refuses its serial (p99 over nodes); then the revoked node's
   certificate calls a sample of nodes and every one must refuse it.

Prints a table with, per figure, the ratio per node against the smallest N of the
same run (1.00 = linear), writes a PNG of each figure against N, and the load
average (two shared cores: figures are noisy).
Goals at 1,000 nodes: idle < 50% of a core; >= 2,000 placements/s; detection <= 3 s
with no false positive; revocation p99 <= 2 s.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pki.authority import Authority
from protos import control_pb2, control_pb2_grpc, topology_pb2
from protos.wire.channel import client_credentials

TD = "scale.bench"
HERE = Path(__file__).resolve().parent
SERVICES = 10
CLK_TCK = os.sysconf("SC_CLK_TCK")


def _host(i: int) -> str:
    """127.1.x.y for node i: never the orchestrator's 127.0.0.1."""
    return f"127.1.{i // 250}.{i % 250 + 1}"


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024
    return 0.0


class Hollow:
    """One hollow-node process and its JSON-lines conversation."""

    def __init__(self, args: list[str], cwd: Path) -> None:
        self.log = cwd / "hollow.log"
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / "hollow.py"), *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log.open("ab"),
            text=True,
            cwd=cwd,
        )
        self.nodes: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def read(self, event: str) -> dict[str, Any]:
        assert self.proc.stdout is not None
        while True:
            line = self.proc.stdout.readline()
            if not line:
                tail = self.log.read_text(errors="replace").splitlines()[-15:]
                raise RuntimeError(
                    f"hollow process exited ({self.proc.wait()}):\n" + "\n".join(tail)
                )
            msg: dict[str, Any] = json.loads(line)
            if msg.get("event") == event:
                return msg

    def send(self, **cmd: Any) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()

    def ask(self, event: str, **cmd: Any) -> dict[str, Any]:
        with self._lock:
            self.send(**cmd)
            return self.read(event)

    def stop(self) -> None:
        try:
            self.send(cmd="quit")
            self.proc.wait(20)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()


@dataclass
class Result:
    nodes: int
    join_s: float = math.nan
    idle_cpu: float = math.nan  # % of one core
    idle_rss: float = math.nan  # MB
    instances: int = 0
    placements_per_s: float = math.nan
    converge_s: float = math.nan
    killed: int = 0
    detect_s: float = math.nan  # kill -> last victim declared dead
    replace_s: float = math.nan  # kill -> all their instances running elsewhere
    false_positives: int = 0
    revoke_p50: float = math.nan
    revoke_p99: float = math.nan
    revoke_refused: str = ""
    notes: list[str] = field(default_factory=list)


class Cluster:
    def __init__(
        self,
        root: Path,
        n: int,
        per_process: int,
        profile: Path | None = None,
        grace: float = 3.0,
    ) -> None:
        self.grace = grace
        self.root = root
        self.n = n
        pki = root / "pki"
        self.authority = Authority.init(pki, TD)
        admin = self.authority.issue("user", "bench-admin", role="admin")
        assert admin.key_pem is not None
        self.creds = client_credentials(
            admin.chain_pem, admin.key_pem, self.authority.trust_bundle()
        )
        (root / "ca.crt").write_bytes(self.authority.trust_bundle())
        # --profile: the orchestrator's event loop under cProfile (written when it stops).
        wrap = ["-m", "cProfile", "-o", str(profile)] if profile is not None else []
        self.orch = subprocess.Popen(
            [
                sys.executable,
                *wrap,
                "-m",
                "orchestrator.cli",
                "orchestrator",
                "serve",
                "--pki-dir",
                str(pki),
                "--store",
                str(root / "store.db"),
                "--listen",
                "127.0.0.1:0",
                "--join-listen",
                "127.0.0.1:0",
                "--heartbeat",
                "1",
                "--grace",
                str(self.grace),
            ],
            stdout=subprocess.PIPE,
            stderr=(root / "orchestrator.log").open("wb"),
            text=True,
            cwd=HERE.parent,
        )
        assert self.orch.stdout is not None
        ready = self.orch.stdout.readline()  # "orchestrator ID listening on H:P join on H:P"
        words = ready.split()
        if "listening" not in words:
            raise RuntimeError(f"orchestrator did not start: {ready!r}")
        self.target = words[words.index("on") + 1]
        self.join = words[-1]
        self.control = control_pb2_grpc.ControlServiceStub(
            grpc.secure_channel(
                self.target,
                self.creds,
                options=[("grpc.max_receive_message_length", 256 * 1024 * 1024)],
            )
        )
        self.per_process = per_process
        self.hollows: list[Hollow] = []

    def start_nodes(self) -> float:
        names = [f"h{i:04d}" for i in range(self.n)]
        started = time.time()
        with futures.ThreadPoolExecutor(8) as pool:
            tokens = list(
                pool.map(
                    lambda name: self.control.CreateJoinToken(
                        control_pb2.JoinTokenRequest(name=name, ttl=3600)
                    ).token,
                    names,
                )
            )
        for p, first in enumerate(range(0, self.n, self.per_process)):
            chunk = range(first, min(self.n, first + self.per_process))
            token_file = self.root / f"tokens-{p}"
            token_file.write_text("\n".join(tokens[i] for i in chunk) + "\n")
            self.hollows.append(
                Hollow(
                    [
                        "--join",
                        self.join,
                        "--token-file",
                        str(token_file),
                        "--ca",
                        str(self.root / "ca.crt"),
                        "--names",
                        ",".join(names[i] for i in chunk),
                        "--hosts",
                        ",".join(_host(i) for i in chunk),
                        "--dir",
                        str(self.root / f"hollow-{p}"),
                    ],
                    self.root,
                )
            )
        for h in self.hollows:
            h.nodes = h.read("ready")["nodes"]
        self.wait(lambda: self.states().count("ready") == self.n, 120, "all nodes ready")
        return time.time() - started

    def nodes(self) -> list[control_pb2.NodeRecord]:
        return list(self.control.ListNodes(control_pb2.ListNodesRequest()).nodes)

    def states(self) -> list[str]:
        return [n.state for n in self.nodes()]

    def unconverged(self) -> int:
        """Instances wanted and not running, over every application."""
        apps = self.control.ListApps(control_pb2.ListAppsRequest()).apps
        return sum(a.desired - a.running for a in apps) if apps else -1

    def workloads(self) -> list[control_pb2.Workload]:
        return list(self.control.ListWorkloads(control_pb2.WorkloadFilter()).workloads)

    def audit(self, since: int = 0) -> list[dict[str, Any]]:
        entries = self.control.AuditTail(control_pb2.AuditRequest(since=since))
        return [json.loads(e.json) for e in entries]

    @staticmethod
    def wait(cond: Any, timeout: float, what: str, every: float = 0.2) -> float:
        deadline = time.monotonic() + timeout
        while not cond():
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what}: not within {timeout:g} s")
            time.sleep(every)
        return time.time()

    def hollow_of(self, name: str) -> Hollow:
        return next(h for h in self.hollows if any(n["name"] == name for n in h.nodes))

    def stop(self) -> None:
        for h in self.hollows:
            h.stop()
        self.orch.terminate()
        try:
            self.orch.wait(30)
        except subprocess.TimeoutExpired:
            self.orch.kill()
            self.orch.wait()


def _apps(n: int) -> list[topology_pb2.Application]:
    """10 x N instances: ten applications of N replicas each. One application's apply
    is one store transaction (all or nothing), which etcd caps at 1.5 MiB: about
    5,000 instances, so 10,000 go in as ten applications."""
    return [
        topology_pb2.Application(
            name=f"scale{s}",
            tenant="bench",
            services=[
                topology_pb2.Service(
                    name="web",
                    image="local/busybox:1",
                    command=["sleep", "infinity"],
                    replicas=n,
                    resources=topology_pb2.Resources(cpu=0.01, memory=4 * 1024 * 1024),
                )
            ],
        )
        for s in range(SERVICES)
    ]


def measure(n: int, args: argparse.Namespace) -> Result:
    result = Result(nodes=n)
    with tempfile.TemporaryDirectory(prefix="capstan-scale-") as tmp:
        cluster = Cluster(Path(tmp), n, args.per_process, args.profile, args.grace)
        try:
            result.join_s = cluster.start_nodes()
            print(f"  N={n}: {n} nodes joined and ready in {result.join_s:.1f}s", flush=True)
            time.sleep(3)  # let joins' audit writes and first reports settle

            # 1. idle
            pid = cluster.orch.pid
            c0, t0 = _cpu_seconds(pid), time.monotonic()
            time.sleep(args.idle_seconds)
            c1, t1 = _cpu_seconds(pid), time.monotonic()
            result.idle_cpu = 100 * (c1 - c0) / (t1 - t0)
            result.idle_rss = _rss_mb(pid)
            print(
                f"  N={n}: idle {result.idle_cpu:.1f}% of a core, RSS {result.idle_rss:.0f} MB",
                flush=True,
            )
            if args.idle_only:
                return result

            # 2. apply 10 x N
            seq0 = len(cluster.audit())
            result.instances = SERVICES * n
            applied = time.time()
            with futures.ThreadPoolExecutor(SERVICES) as pool:
                list(
                    pool.map(
                        lambda app: cluster.control.Apply(control_pb2.ApplyRequest(app=app)),
                        _apps(n),
                    )
                )

            def all_running() -> bool:
                # Every instance of every application runs (the applications' summaries:
                # the full list of 10 x N records, polled, was itself a load on the
                # orchestrator that grew with N).
                return cluster.unconverged() == 0

            running_at = cluster.wait(all_running, args.timeout, "apply converged", every=0.5)
            result.converge_s = running_at - applied
            placed = [e for e in cluster.audit(seq0) if e["event"] == "workload.placed"]
            if placed:
                last = max(float(e["at"]) for e in placed)
                result.placements_per_s = len(placed) / max(1e-3, last - applied)
            print(
                f"  N={n}: {len(placed)} placed at {result.placements_per_s:.0f}/s, "
                f"all running after {result.converge_s:.1f}s",
                flush=True,
            )

            # 3. kill 5% at once
            by_node: dict[str, set[str]] = {}
            for w in cluster.workloads():
                by_node.setdefault(w.node, set()).add(w.id)
            victims = sorted(by_node)[:: max(1, round(100 / 5))][: max(1, n // 20)]
            result.killed = len(victims)
            ids = set().union(*(by_node[v] for v in victims))
            seq1 = len(cluster.audit())
            groups: dict[int, list[str]] = {}
            for v in victims:
                groups.setdefault(id(cluster.hollow_of(v)), []).append(v)
            hollow_by_id = {id(h): h for h in cluster.hollows}
            for key, names in groups.items():  # every process first, then read the answers
                hollow_by_id[key].send(cmd="kill", names=names)
            kill_at = min(float(hollow_by_id[k].read("killed")["at"]) for k in groups)

            def replaced() -> bool:
                # No instance left on a victim and every instance running: theirs run
                # elsewhere (the same condition as looking at each of their records,
                # stricter if anything, from summaries that cost the orchestrator a
                # pass over its records instead of a copy of all of them every 0.1 s).
                left = {n.name: n.workloads for n in cluster.nodes() if n.name in victims}
                return not any(left.values()) and cluster.unconverged() == 0

            replaced_at = cluster.wait(replaced, args.timeout, "victims replaced", every=0.1)
            result.replace_s = replaced_at - kill_at
            events = cluster.audit(seq1)
            dead = [e for e in events if e["event"] == "node.dead"]
            victim_dead = {e["node"]: float(e["at"]) for e in dead if e["node"] in victims}
            if len(victim_dead) == len(victims):
                result.detect_s = max(victim_dead.values()) - kill_at
            else:
                lost = len(victims) - len(victim_dead)
                result.notes.append(f"{lost} victims never declared dead")
            print(
                f"  N={n}: killed {len(victims)} nodes: all dead after {result.detect_s:.2f}s, "
                f"{len(ids)} instances running elsewhere after {result.replace_s:.2f}s",
                flush=True,
            )

            # 4. revoke one live node
            alive = [nd for h in cluster.hollows for nd in h.nodes if nd["name"] not in victims]
            revoked = alive[len(alive) // 2]
            revoked_at = time.time()
            cluster.control.RevokeNode(control_pb2.RevokeNodeRequest(name=revoked["name"]))
            for h in cluster.hollows:
                h.send(cmd="denied", serial=revoked["serial"], timeout=30)
            lat: list[float] = []
            missing = 0
            for h in cluster.hollows:
                for t in h.read("denied")["times"].values():
                    if t is None:
                        missing += 1
                    else:
                        lat.append(float(t) - revoked_at)
            if missing:
                result.notes.append(f"{missing} nodes never refused the revoked serial")
            lat.sort()
            if lat:
                result.revoke_p50 = statistics.median(lat)
                result.revoke_p99 = lat[min(len(lat) - 1, int(0.99 * len(lat)))]
            sample = [nd for nd in alive if nd["name"] != revoked["name"]][:: max(1, n // 20)]
            answers = cluster.hollow_of(revoked["name"]).ask(
                "probe",
                cmd="probe",
                name=revoked["name"],
                targets=[[nd["address"], nd["id"]] for nd in sample],
            )["answers"]
            refused = sum(1 for a in answers if a == "UNAUTHENTICATED: certificate revoked")
            result.revoke_refused = f"{refused}/{len(answers)}"
            print(
                f"  N={n}: revocation refused by every node after p50 {result.revoke_p50:.2f}s "
                f"p99 {result.revoke_p99:.2f}s; probe refused {result.revoke_refused}",
                flush=True,
            )

            # False positives over the whole run: a node.dead of a node never killed (the
            # revoked node is cut off on purpose and excluded).
            wrong = [
                e
                for e in cluster.audit()
                if e["event"] == "node.dead" and e["node"] not in {*victims, revoked["name"]}
            ]
            result.false_positives = len(wrong)
            if wrong:
                first = min(float(e["at"]) for e in wrong)
                phase = (
                    "before the apply"
                    if first < applied
                    else "during the apply"
                    if first < running_at
                    else "after the kill"
                    if first < revoked_at
                    else "after the revocation"
                )
                result.notes.append(
                    f"{len(wrong)} false positives, the first {phase} "
                    f"(apply +{first - applied:.1f}s, kill {first - kill_at:+.1f}s): "
                    + ", ".join(sorted(e["node"] for e in wrong)[:10])
                )
            # A hollow process's own stall silences its nodes for real: said, so that a
            # death it caused is not taken for the orchestrator's mistake.
            stalls = [
                float(line.split("stalled ")[1].split(" s")[0])
                for h in {h.log for h in cluster.hollows}
                for line in h.read_text(errors="replace").splitlines()
                if "hollow loop stalled" in line
            ]
            if stalls:
                result.notes.append(
                    f"hollow processes stalled {len(stalls)} times (longest {max(stalls):.2f}s): "
                    "their nodes sent nothing meanwhile"
                )
        finally:
            cluster.stop()
    return result


def _table(results: list[Result]) -> str:
    base = results[0]
    rows = [
        ("nodes", lambda r: f"{r.nodes}"),
        ("join + ready (s)", lambda r: f"{r.join_s:.1f}"),
        ("idle CPU (% of a core)", lambda r: f"{r.idle_cpu:.1f}"),
        (
            "  per node vs smallest N",
            lambda r: f"{(r.idle_cpu / r.nodes) / (base.idle_cpu / base.nodes):.2f}x",
        ),
        ("idle RSS (MB)", lambda r: f"{r.idle_rss:.0f}"),
        ("instances applied", lambda r: f"{r.instances}"),
        ("placements/s", lambda r: f"{r.placements_per_s:.0f}"),
        ("  vs smallest N", lambda r: f"{r.placements_per_s / base.placements_per_s:.2f}x"),
        ("apply -> all running (s)", lambda r: f"{r.converge_s:.1f}"),
        ("nodes killed (5%)", lambda r: f"{r.killed}"),
        ("kill -> all declared dead (s)", lambda r: f"{r.detect_s:.2f}"),
        ("kill -> running elsewhere (s)", lambda r: f"{r.replace_s:.2f}"),
        ("false positives", lambda r: f"{r.false_positives}"),
        ("revocation p50 (s)", lambda r: f"{r.revoke_p50:.2f}"),
        ("revocation p99 (s)", lambda r: f"{r.revoke_p99:.2f}"),
        ("revoked cert refused (probe)", lambda r: r.revoke_refused),
    ]
    width = max(len(name) for name, _ in rows)
    lines = []
    for name, cell in rows:
        lines.append(f"| {name:<{width}} | " + " | ".join(f"{cell(r):>8}" for r in results) + " |")
    lines.insert(1, "|" + "-" * (width + 2) + "|" + "|".join("-" * 10 for _ in results) + "|")
    return "\n".join(lines)


def _plot(results: list[Result], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = [r.nodes for r in results]
    panels = [
        ("idle orchestrator CPU (% of one core)", [r.idle_cpu for r in results], 50.0),
        ("idle orchestrator RSS (MB)", [r.idle_rss for r in results], None),
        ("placements per second", [r.placements_per_s for r in results], 2000.0),
        ("apply of 10 x N: until all run (s)", [r.converge_s for r in results], None),
        ("kill 5%: until all declared dead (s)", [r.detect_s for r in results], 3.0),
        ("revocation refused everywhere, p99 (s)", [r.revoke_p99 for r in results], 2.0),
    ]
    fig, axes = plt.subplots(2, 3, figsize=(14, 8))
    for ax, (title, ys, goal) in zip(axes.flat, panels, strict=True):
        ax.plot(xs, ys, marker="o")
        if goal is not None:
            ax.axhline(goal, color="red", linestyle="--", linewidth=1, label="goal at 1,000")
            ax.legend(loc="best", fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("hollow nodes")
        ax.grid(True, alpha=0.3)
    load = os.getloadavg()[0]
    fig.suptitle(f"Capstan orchestrator against cluster size (load average {load:.1f})")
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--nodes", default="100,250,500,1000")
    parser.add_argument("--per-process", type=int, default=500)
    parser.add_argument("--idle-seconds", type=float, default=20.0)
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--plot", type=Path, default=Path("scale.png"))
    parser.add_argument("--idle-only", action="store_true", help="stop after the idle figures")
    parser.add_argument("--profile", type=Path, help="cProfile the orchestrator into this file")
    parser.add_argument(
        "--grace",
        type=float,
        default=3.0,
        help="seconds without a report before a node is dead (heartbeats are 1 s)",
    )
    args = parser.parse_args()
    sizes = [int(x) for x in args.nodes.split(",")]
    results = []
    print(f"load average at start {os.getloadavg()[0]:.2f}", flush=True)
    for n in sizes:
        results.append(measure(n, args))
    print(f"\nload average at end {os.getloadavg()[0]:.2f} (2 shared cores)")
    print(_table(results))
    for r in results:
        for note in r.notes:
            print(f"N={r.nodes}: {note}")
    last = results[-1]
    print(
        f"goals at N={last.nodes}: idle {last.idle_cpu:.0f}% (< 50%), "
        f"placements {last.placements_per_s:.0f}/s (>= 2000), "
        f"detection {last.detect_s:.2f}s (<= 3) with {last.false_positives} false positives (0), "
        f"revocation p99 {last.revoke_p99:.2f}s (<= 2)"
    )
    try:
        _plot(results, args.plot)
        print(f"plot: {args.plot}")
    except ImportError:
        print("plot skipped: matplotlib is not installed (pip install 'capstan[bench]')")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    sys.exit(main())
