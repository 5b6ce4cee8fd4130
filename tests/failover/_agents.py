"""Node agents as real processes (``capstan node join``), so kill -9 and SIGSTOP are real,
next to an in-process orchestrator with chosen heartbeat settings. Shared by the
failover tests and bench/bench_failover.py."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from node.runtime import proc
from node.runtime.process import ProcessRuntime, ensure_busybox_image
from node.secretfiles import secret_mounts, unmount
from node.state import NodeState
from orchestrator.config import OrchestratorConfig
from orchestrator.server import Orchestrator, start
from pki.authority import Authority
from protos import control_pb2, topology_pb2
from tests.control_api.conftest import TD, Running
from tests.waiting import wait_for

IMAGE = "local/busybox:1"
T = TypeVar("T")
_READY = re.compile(r"^node (\S+) listening on (\S+) runtime=(\S+)\s*$", re.M)
ROOT = Path(__file__).resolve().parents[2]


def start_orch(
    root: Path, *, heartbeat: float, grace: float, reconcile_interval: float = 0.2
) -> Running:
    """An orchestrator on 127.0.0.1 in a background thread (its own event loop)."""
    pki = root / "pki"
    if not (pki / "state.json").exists():
        Authority.init(pki, TD)
    config = OrchestratorConfig(
        pki_dir=pki,
        store=root / "store.db",
        listen="127.0.0.1:0",
        join_listen="127.0.0.1:0",
        heartbeat=heartbeat,
        grace=grace,
        reconcile_interval=reconcile_interval,
    )
    loop = asyncio.new_event_loop()
    ready: list[Orchestrator] = []
    failed: list[BaseException] = []
    started = threading.Event()

    def main() -> None:
        asyncio.set_event_loop(loop)
        try:
            ready.append(loop.run_until_complete(start(config)))
        except BaseException as exc:
            failed.append(exc)
        started.set()
        if ready:
            loop.run_forever()

    threading.Thread(target=main, daemon=True).start()
    started.wait(30)
    if failed:
        raise failed[0]
    orch = ready[0]
    return Running(
        orch,
        loop,
        Authority.open(pki),
        root,
        f"127.0.0.1:{orch.port}",
        f"127.0.0.1:{orch.join_port}",
    )


@dataclass
class Agent:
    """One ``capstan node join`` process on its own loopback address and state directory."""

    name: str
    ip: str
    state_dir: Path
    log: Path
    process: subprocess.Popen[bytes] | None = None
    runtime: str = "process"
    mode: str = "push"  # or pull: the node watches its assignments and converges itself

    @property
    def node_id(self) -> str:
        return f"spiffe://{TD}/node/{self.name}"

    def start(self, join_target: str, ca_file: Path, token: str | None = None) -> None:
        """Join (with ``token``) or restart (without) and wait for the ready line."""
        if token is not None and self.runtime == "docker":
            from node.runtime.docker import DockerRuntime

            docker_rt = DockerRuntime(self.node_id, self.state_dir)
            docker_rt.adopt_image(IMAGE)
            docker_rt.close()
        elif token is not None:
            seed = ProcessRuntime(self.node_id, self.state_dir)
            ensure_busybox_image(seed)
            seed.close()
        args = [sys.executable, "-m", "orchestrator.cli", "node", "join", join_target]
        args += ["--ca", str(ca_file), "--name", self.name, "--listen", f"{self.ip}:0"]
        args += ["--state-dir", str(self.state_dir), "--runtime", self.runtime]
        if token is not None and self.mode != "push":
            args += ["--mode", self.mode]
        env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=str(ROOT))
        env.pop("CAPSTAN_JOIN_TOKEN", None)
        if token is not None:
            env["CAPSTAN_JOIN_TOKEN"] = token  # not argv: other users can read argv
        offset = self.log.stat().st_size if self.log.exists() else 0
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=env,
                cwd=ROOT,
            )

        def ready() -> bool:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited: {self.log.read_text()[-2000:]}")
            return bool(_READY.search(self.log.read_text()[offset:]))

        wait_for(ready, 30, f"{self.name} ready")

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def kill9(self) -> None:
        """SIGKILL the agent alone: its workloads run in sessions of their own and survive."""
        os.kill(self.pid, signal.SIGKILL)
        assert self.process is not None
        self.process.wait(10)

    def pause(self) -> None:
        os.kill(self.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.pid, signal.SIGCONT)

    def containers(self) -> dict[str, str]:
        """Container name -> workload id of every recorded workload process still alive."""
        db = self.state_dir / "state.db"
        if not db.exists():
            return {}
        state = NodeState(db)
        try:
            return {
                r.name: r.workload_id
                for r in state.all()
                if r.pid is not None and proc.is_same_alive(r.pid, r.start_ticks)
            }
        finally:
            state.close()

    def cleanup(self) -> None:
        """Kill the agent (even paused) and every workload process it recorded, and
        unmount the secrets tmpfs the killed agent could not."""
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
                os.kill(self.pid, signal.SIGCONT)
            self.process.wait(10)
        db = self.state_dir / "state.db"
        if db.exists():
            state = NodeState(db)
            try:
                for r in state.all():
                    if r.pid is not None and proc.is_same_alive(r.pid, r.start_ticks):
                        proc.signal_session(r.pid, signal.SIGKILL)
            finally:
                state.close()
        for mount in secret_mounts(self.state_dir):
            unmount(mount)


def join_agent(orch: Running, root: Path, name: str, ip: str, runtime: str = "process") -> Agent:
    token = orch.control().CreateJoinToken(control_pb2.JoinTokenRequest(name=name)).token
    ca_file = root / "cluster-ca.crt"
    ca_file.write_bytes(orch.authority.trust_bundle())
    state = root / name
    state.mkdir(parents=True, exist_ok=True)
    agent = Agent(name, ip, state, root / f"{name}.log", runtime=runtime)
    agent.start(orch.join_target, ca_file, token)
    return agent


def restart_agent(orch: Running, root: Path, agent: Agent) -> None:
    agent.start(orch.join_target, root / "cluster-ca.crt")


def sleeper_app(name: str, replicas: int, *, max_unavailable: int = 1) -> topology_pb2.Application:
    return topology_pb2.Application(
        name=name,
        tenant="default",
        services=[
            topology_pb2.Service(
                name="web",
                image=IMAGE,
                command=["sleep", "3600"],
                replicas=replicas,
                max_unavailable=max_unavailable,
            )
        ],
    )


def on_loop(orch: Running, fn: Callable[[], T]) -> T:
    """Run ``fn`` on the orchestrator's event loop: its records are not thread-safe."""

    async def call() -> T:
        return fn()

    return asyncio.run_coroutine_threadsafe(call(), orch.loop).result(30)


def node_states(orch: Running) -> dict[str, str]:
    return on_loop(orch, lambda: {n.name: n.state for n in orch.orch.state.all_nodes()})


def workloads(orch: Running) -> list[control_pb2.Workload]:
    return on_loop(orch, orch.orch.state.all_workloads)


def node_state(orch: Running, name: str) -> str:
    return node_states(orch).get(name, "")


def audit(orch: Running) -> list[dict[str, Any]]:
    return asyncio.run_coroutine_threadsafe(orch.orch.audit.entries(), orch.loop).result(30)
