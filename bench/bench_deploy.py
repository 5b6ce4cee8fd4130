"""Deploying N replicas on real Docker: Capstan next to Docker Swarm and raw `docker run`.

    python bench/bench_deploy.py [--replicas 50] [--runs 3] [--skip-swarm]

Each run measures, on the same Docker Engine, the time until every replica runs:

- **raw**: ``--replicas`` containers created and started in parallel through the
  Docker API (docker-py in this process, one thread each: no CLI start-up per
  container, which ``docker run`` in a shell loop would pay). The engine's own
  limit: the floor every ratio is taken against;
- **raw, sandboxed** (for reference, no goal): the same, each container with the
  sandbox Capstan gives its instances (read-only root, tmpfs /tmp, no
  capabilities, no new privileges, Capstan's seccomp profile, a PIDs limit, private
  IPC, a non-root user): what the engine itself spends on the hardening;
- **Swarm**: a single-manager swarm on loopback (``docker swarm init
  --advertise-addr 127.0.0.1``), ``docker service create --replicas N`` until every
  task runs, its tasks polled through the API (a CLI process per poll would load
  the machine Swarm runs on); the swarm is left afterwards. Swarm wants a bridge
  (docker_gwbridge) and an ingress network: on an engine started with
  ``--bridge=none`` it may not initialise, and the run says so and measures the rest;
- **Capstan**: ``capstan up --runtime docker`` (three nodes on loopback), then
  ``capstan apply --wait`` of one service with N replicas, timed from the command
  until it returns with every replica running (end to end: CLI start, apply,
  placement, tokens, node calls, container create and start, reports).

Containers run ``sleep`` with no network. Prints each run, then with ``--runs`` > 1
the min and median of each and the ratios of the medians, with the load average.
Goals: Capstan <= 0.5x Swarm and <= 1.3x raw.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent import futures
from pathlib import Path
from typing import Any

IMAGE = "local/busybox:1"
LABEL = "capstan-bench-deploy"


def _docker(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=check)


def _sandbox() -> dict[str, Any]:
    """The container options Capstan's docker runtime gives every instance."""
    import docker.types

    from node.runtime.docker import NO_NEW_PRIVILEGES, PIDS_LIMIT, TMP_MOUNT
    from node.seccomp import profile_text

    return {
        "read_only": True,
        "tmpfs": {"/tmp": TMP_MOUNT},  # noqa: S108 - the container's own /tmp
        "cap_drop": ["ALL"],
        "security_opt": [NO_NEW_PRIVILEGES, "seccomp=" + profile_text("")],
        "pids_limit": PIDS_LIMIT,
        "ipc_mode": "private",
        "devices": [],
        "user": "100000:100000",
        "log_config": docker.types.LogConfig(
            type="json-file", config={"max-size": "10m", "max-file": "3"}
        ),
    }


def raw(replicas: int, *, sandboxed: bool = False) -> float:
    import docker

    client = docker.from_env()
    extra = _sandbox() if sandboxed else {}
    start = time.perf_counter()

    def one(i: int) -> None:
        client.containers.run(
            IMAGE,
            ["sleep", "3600"],
            name=f"{LABEL}-raw-{i}",
            detach=True,
            network_mode="none",
            labels={LABEL: "raw"},
            **extra,
        )

    try:
        with futures.ThreadPoolExecutor(replicas) as pool:
            list(pool.map(one, range(replicas)))
        elapsed = time.perf_counter() - start
        running = client.containers.list(filters={"label": f"{LABEL}=raw", "status": "running"})
        if len(running) != replicas:
            raise RuntimeError(f"raw: {len(running)} of {replicas} running")
        return elapsed
    finally:
        for c in client.containers.list(all=True, filters={"label": f"{LABEL}=raw"}):
            c.remove(force=True)


def swarm(replicas: int, timeout: float) -> tuple[float | None, str]:
    import docker

    api = docker.APIClient(version="auto")
    init = _docker("swarm", "init", "--advertise-addr", "127.0.0.1", check=False)
    if init.returncode != 0:
        return None, "swarm init failed: " + " ".join(init.stderr.split())[:300]
    try:
        start = time.perf_counter()
        created = _docker(
            "service",
            "create",
            "--detach",
            "--no-resolve-image",
            "--name",
            LABEL,
            "--replicas",
            str(replicas),
            "--network",
            "host",
            IMAGE,
            "sleep",
            "3600",
            check=False,
        )
        if created.returncode != 0:
            return None, "service create failed: " + " ".join(created.stderr.split())[:300]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            tasks = api.tasks(filters={"service": LABEL, "desired-state": "running"})
            if sum(1 for t in tasks if t["Status"]["State"] == "running") >= replicas:
                return time.perf_counter() - start, ""
            time.sleep(0.1)
        return None, f"swarm: not all {replicas} tasks running within {timeout:g}s"
    finally:
        _docker("service", "rm", LABEL, check=False)
        _docker("swarm", "leave", "--force", check=False)
        # Swarm made a bridge for its gateway: leave the engine as it was (no bridge).
        _docker("network", "rm", "docker_gwbridge", check=False)


def capstan(replicas: int, timeout: float, base_port: int) -> float:
    exe = shutil.which("capstan", path=str(Path(sys.executable).parent)) or "capstan"
    with tempfile.TemporaryDirectory(prefix="capstan-deploy-") as tmp:
        env = {**os.environ, "CAPSTAN_HOME": tmp}
        cluster = Path(tmp) / "local"
        app = Path(tmp) / "app.yaml"
        app.write_text(
            "apiVersion: capstan/v1\nkind: Application\nname: deploy\ntenant: bench\n"
            "services:\n  sleeper:\n    image: local/busybox:1\n"
            f'    command: ["sleep", "3600"]\n    replicas: {replicas}\n'
        )
        up = subprocess.run(
            [
                exe,
                "up",
                "--dir",
                str(cluster),
                "--runtime",
                "docker",
                "--nodes",
                "3",
                "--base-port",
                str(base_port),
            ],
            capture_output=True,
            text=True,
            env=env,
            check=False,
        )
        if up.returncode != 0:
            raise RuntimeError(f"capstan up failed: {up.stdout}{up.stderr}")
        try:
            start = time.perf_counter()
            applied = subprocess.run(
                [exe, "apply", "-f", str(app), "--wait", "--timeout", f"{timeout:g}s"],
                capture_output=True,
                text=True,
                env=env,
                check=False,
            )
            elapsed = time.perf_counter() - start
            if applied.returncode != 0:
                raise RuntimeError(f"capstan apply failed: {applied.stdout}{applied.stderr}")
            return elapsed
        finally:
            subprocess.run(
                [exe, "down", "--dir", str(cluster), "--purge"],
                capture_output=True,
                env=env,
                check=False,
            )


def _containers() -> set[str]:
    return set(_docker("ps", "-aq", "--no-trunc").stdout.split())


def settle(before: set[str], timeout: float = 120.0) -> None:
    """Wait until the engine holds no container the previous phase left (Swarm removes
    a service's containers after ``service rm`` returns): the next phase must not
    pay for the last one's cleanup."""
    deadline = time.monotonic() + timeout
    while _containers() - before and time.monotonic() < deadline:
        time.sleep(0.2)


def _median(values: list[float]) -> float:
    return statistics.median(values)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--replicas", type=int, default=50)
    parser.add_argument("--runs", type=int, default=1, help="repeat everything; min and median")
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--base-port", type=int, default=7640)
    parser.add_argument("--skip-swarm", action="store_true", help="raw and Capstan only")
    parser.add_argument("--skip-sandboxed", action="store_true", help="no sandboxed raw reference")
    args = parser.parse_args()
    n = args.replicas
    engine = _docker("version", "--format", "{{.Server.Version}}").stdout.strip()
    print(
        f"{n} replicas on Docker {engine}, {args.runs} run(s), load average {_load()}",
        flush=True,
    )
    times: dict[str, list[float]] = {"raw": [], "sandboxed": [], "swarm": [], "capstan": []}
    before = _containers()
    for run in range(1, args.runs + 1):
        if args.runs > 1:
            print(f"-- run {run}, load average {_load()}", flush=True)
        settle(before)
        t_raw = raw(n)
        times["raw"].append(t_raw)
        print(f"raw parallel docker run : {t_raw:6.2f} s  (Docker API, {n} threads)", flush=True)
        if not args.skip_sandboxed:
            settle(before)
            t_box = raw(n, sandboxed=True)
            times["sandboxed"].append(t_box)
            print(f"raw, Capstan's sandbox  : {t_box:6.2f} s  (reference)", flush=True)
        settle(before)
        t_swarm, why = (None, "skipped") if args.skip_swarm else swarm(n, args.timeout)
        if t_swarm is None:
            print(f"Docker Swarm            :    n/a  ({why})", flush=True)
        else:
            times["swarm"].append(t_swarm)
            print(f"Docker Swarm            : {t_swarm:6.2f} s", flush=True)
        settle(before)
        t_capstan = capstan(n, args.timeout, args.base_port)
        times["capstan"].append(t_capstan)
        print(f"Capstan (3 nodes)       : {t_capstan:6.2f} s", flush=True)
        line = f"Capstan / raw {t_capstan / t_raw:5.2f}x"
        if t_swarm is not None:
            line += f"   Capstan / Swarm {t_capstan / t_swarm:5.2f}x"
        print(line, flush=True)
    if args.runs > 1:
        print(f"-- {args.runs} runs: min / median")
        names = {
            "raw": "raw parallel docker run",
            "sandboxed": "raw, Capstan's sandbox",
            "swarm": "Docker Swarm",
            "capstan": "Capstan (3 nodes)",
        }
        for key, label in names.items():
            if times[key]:
                print(f"{label:24s}: {min(times[key]):6.2f} / {_median(times[key]):6.2f} s")
        per_run = [c / r for c, r in zip(times["capstan"], times["raw"], strict=True)]
        print(f"Capstan / raw per run    : min {min(per_run):.2f}x, median {_median(per_run):.2f}x")
    ratio_raw = _median(times["capstan"]) / _median(times["raw"])
    ok = ratio_raw <= 1.3
    which = "medians" if args.runs > 1 else "this run"
    print(
        f"Capstan / raw   {ratio_raw:5.2f}x  (goal <= 1.3x, {which})  "
        + ("ok" if ratio_raw <= 1.3 else "MISSED")
    )
    if times["sandboxed"]:
        print(
            f"sandboxed / raw {_median(times['sandboxed']) / _median(times['raw']):5.2f}x"
            "  (the engine's own cost of the hardening)"
        )
    if times["swarm"]:
        ratio_swarm = _median(times["capstan"]) / _median(times["swarm"])
        ok &= ratio_swarm <= 0.5
        print(
            f"Capstan / Swarm {ratio_swarm:5.2f}x  (goal <= 0.5x, {which})  "
            + ("ok" if ratio_swarm <= 0.5 else "MISSED")
        )
        print(f"Swarm / raw     {_median(times['swarm']) / _median(times['raw']):5.2f}x")
    print(f"load average at end {_load()}")
    return 0 if ok else 1


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


if __name__ == "__main__":
    sys.exit(main())
