"""Deploying N replicas on real Docker: Capstan next to Docker Swarm and raw `docker run`.

    python bench/bench_deploy.py [--replicas 50] [--skip-swarm]

One run, three ways to reach "every replica runs", on the same Docker Engine:

- **raw**: ``--replicas`` containers created and started in parallel through the
  Docker API, one thread each (the engine's own limit: the floor);
- **Swarm**: a single-manager swarm on loopback (``docker swarm init
  --advertise-addr 127.0.0.1``), ``docker service create --replicas N`` until every
  task runs; the swarm is left afterwards. Swarm wants a bridge (docker_gwbridge)
  and an ingress network: on an engine started with ``--bridge=none`` it may not
  initialise, and the run says so and measures the rest;
- **Capstan**: ``capstan up --runtime docker`` (three nodes on loopback), then
  ``capstan apply --wait`` of one service with N replicas, timed from the command
  until it returns with every replica running (end to end: CLI start, apply,
  placement, tokens, node calls, container create and start, reports).

Containers run ``sleep`` with no network. Prints each time and the ratios.
Goals: Capstan <= 0.5x Swarm and <= 1.3x raw.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent import futures
from pathlib import Path

IMAGE = "local/busybox:1"
LABEL = "capstan-bench-deploy"


def _docker(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=check)


def raw(replicas: int) -> float:
    import docker

    client = docker.from_env()
    start = time.perf_counter()

    def one(i: int) -> None:
        client.containers.run(
            IMAGE,
            ["sleep", "3600"],
            name=f"{LABEL}-raw-{i}",
            detach=True,
            network_mode="none",
            labels={LABEL: "raw"},
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
            ps = _docker(
                "service",
                "ps",
                LABEL,
                "--filter",
                "desired-state=running",
                "--format",
                "{{.CurrentState}}",
                check=False,
            )
            states = ps.stdout.split("\n")
            if sum(1 for s in states if s.startswith("Running")) >= replicas:
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


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--replicas", type=int, default=50)
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--base-port", type=int, default=7640)
    parser.add_argument("--skip-swarm", action="store_true", help="raw and Capstan only")
    args = parser.parse_args()
    n = args.replicas
    engine = _docker("version", "--format", "{{.Server.Version}}").stdout.strip()
    print(
        f"{n} replicas on Docker {engine}, "
        f"load average {os.getloadavg()[0]:.2f}",
        flush=True,
    )
    t_raw = raw(n)
    print(f"raw parallel docker run : {t_raw:6.2f} s", flush=True)
    t_swarm, why = (None, "skipped") if args.skip_swarm else swarm(n, args.timeout)
    if t_swarm is None:
        print(f"Docker Swarm            :    n/a  ({why})", flush=True)
    else:
        print(f"Docker Swarm            : {t_swarm:6.2f} s", flush=True)
    t_capstan = capstan(n, args.timeout, args.base_port)
    print(f"Capstan (3 nodes)       : {t_capstan:6.2f} s", flush=True)
    ok = True
    ratio_raw = t_capstan / t_raw
    verdict = "ok" if ratio_raw <= 1.3 else "MISSED"
    ok &= ratio_raw <= 1.3
    print(f"Capstan / raw   {ratio_raw:5.2f}x  (goal <= 1.3x)  {verdict}")
    if t_swarm is not None:
        ratio_swarm = t_capstan / t_swarm
        verdict = "ok" if ratio_swarm <= 0.5 else "MISSED"
        ok &= ratio_swarm <= 0.5
        print(f"Capstan / Swarm {ratio_swarm:5.2f}x  (goal <= 0.5x)  {verdict}")
        print(f"Swarm / raw     {t_swarm / t_raw:5.2f}x")
    print(f"load average at end {os.getloadavg()[0]:.2f}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
