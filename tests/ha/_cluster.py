"""An HA cluster of real processes on loopback: etcd members (Debian's binary), three
``capstan orchestrator serve --etcd`` processes sharing one PKI, and node agents
(``capstan node join``), so kill -9, SIGSTOP and the loss of etcd members are real.
Shared by the HA tests and bench/bench_ha.py."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from orchestrator import etcdproc
from orchestrator.leader import LeaderInfo, current_leader
from orchestrator.store.etcd import EtcdStore
from pki.authority import Authority, Issued
from protos import control_pb2, control_pb2_grpc, gateway_pb2_grpc, topology_pb2
from protos.wire.channel import client_credentials
from tests.failover._agents import Agent
from tests.waiting import wait_for

TD = "orch.test"  # the trust domain the shared Agent helper seeds node state with
IMAGE = "local/busybox:1"
ROOT = Path(__file__).resolve().parents[2]
NAMESPACE = "/capstan"
_READY = re.compile(r"^orchestrator \S+ listening on (\S+) join on (\S+)\s*$", re.M)


@dataclass
class OrchestratorProcess:
    member: str
    listen: str
    join: str
    log: Path
    process: subprocess.Popen[bytes] | None = None

    def start(self, pki: Path, etcd: str, *, leader_ttl: float = 2.0) -> None:
        args = [sys.executable, "-m", "orchestrator.cli", "orchestrator", "serve"]
        args += ["--pki-dir", str(pki), "--listen", self.listen, "--join-listen", self.join]
        args += ["--etcd", etcd, "--etcd-namespace", NAMESPACE, "--member", self.member]
        args += ["--leader-ttl", str(leader_ttl), "--heartbeat", "0.5", "--grace", "4", "-v"]
        env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=str(ROOT))
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
                raise RuntimeError(f"{self.member} exited: {self.log.read_text()[-3000:]}")
            return bool(_READY.search(self.log.read_text()[offset:]))

        wait_for(ready, 30, f"orchestrator {self.member} ready")

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def signal(self, sig: signal.Signals) -> None:
        assert self.process is not None
        os.kill(self.process.pid, sig)

    def kill9(self) -> None:
        self.signal(signal.SIGKILL)
        assert self.process is not None
        self.process.wait(10)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.process.pid, signal.SIGCONT)
            self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)


@dataclass
class HACluster:
    root: Path
    etcd: list[etcdproc.Member]
    orchestrators: list[OrchestratorProcess]
    authority: Authority
    agents: list[Agent] = field(default_factory=list)

    @property
    def endpoints(self) -> str:
        return ",".join(m.client_endpoint for m in self.etcd)

    # -- reading the store --------------------------------------------------------------

    def read_leader(self, timeout: float = 5.0) -> LeaderInfo | None:
        async def read() -> LeaderInfo | None:
            live = [m.client_endpoint for m in self.etcd if m.process is not None]
            async with EtcdStore(live, namespace=NAMESPACE, timeout=timeout) as store:
                return await current_leader(store)

        return asyncio.run(read())

    def wait_leader(self, *, above: int = 0, timeout: float = 30.0) -> LeaderInfo:
        """The leader once its epoch is greater than ``above``, its process is alive and
        it serves (it has read the store back after its election)."""
        found: list[LeaderInfo] = []

        def elected() -> bool:
            with contextlib.suppress(Exception):
                info = self.read_leader()
                if info is not None and info.epoch > above and self.by_address(info.address).alive:
                    self.control(info.address).ListApps(control_pb2.ListAppsRequest(), timeout=5)
                    found[:] = [info]
                    return True
            return False

        wait_for(elected, timeout, f"a leader with an epoch above {above}")
        return found[0]

    def etcd_leader_index(self, *, follower: bool = False) -> int:
        """The index of etcd's raft leader among ``etcd`` (or of one of its followers)."""

        async def roles() -> list[bool]:
            async with EtcdStore(
                [m.client_endpoint for m in self.etcd], namespace=NAMESPACE
            ) as store:
                health = {h.name: h.leader for h in await store.members()}
            return [health.get(m.name, False) for m in self.etcd]

        found: list[int] = []

        def known() -> bool:
            with contextlib.suppress(Exception):
                leaders = asyncio.run(roles())
                if sum(leaders) == 1:
                    found[:] = [leaders.index(not follower)]
                    return True
            return False

        wait_for(known, 20, "etcd's raft leader")
        return found[0]

    def by_address(self, address: str) -> OrchestratorProcess:
        return next(o for o in self.orchestrators if o.listen == address)

    # -- clients ------------------------------------------------------------------------

    def control(self, address: str) -> control_pb2_grpc.ControlServiceStub:
        return self.stub_for(self.authority.issue("user", "admin", role="admin"), address)

    def _channel(self, issued: Issued, address: str) -> grpc.Channel:
        assert issued.key_pem is not None
        creds = client_credentials(issued.chain_pem, issued.key_pem, self.authority.trust_bundle())
        return grpc.secure_channel(address, creds)

    def stub_for(self, issued: Issued, address: str) -> control_pb2_grpc.ControlServiceStub:
        """A ControlService stub at ``address`` presenting ``issued``."""
        return control_pb2_grpc.ControlServiceStub(self._channel(issued, address))

    def gateway_stub_for(self, issued: Issued, address: str) -> gateway_pb2_grpc.NodeGatewayStub:
        """A NodeGateway stub at ``address`` presenting ``issued``."""
        return gateway_pb2_grpc.NodeGatewayStub(self._channel(issued, address))

    def workload_ids(self, app: str, *, timeout: float = 30.0) -> set[str]:
        """The ids of ``app``'s workloads desired running, read from the leader. Asked
        again on UNAVAILABLE: while etcd or the orchestrators elect, the one found as
        leader may step down before it answers ("not the leader; no leader yet")."""
        found: list[set[str]] = []

        def listed() -> bool:
            stub = self.control(self.wait_leader(timeout=timeout).address)
            try:
                reply = stub.ListWorkloads(control_pb2.WorkloadFilter(), timeout=10)
            except grpc.RpcError as exc:
                if exc.code() is grpc.StatusCode.UNAVAILABLE:
                    return False
                raise
            found[:] = [{w.id for w in reply.workloads if w.app == app and w.desired == "running"}]
            return True

        wait_for(listed, timeout, f"the leader to list {app}'s workloads")
        return found[0]

    def join(self, name: str, ip: str, join_at: str = "", mode: str = "push") -> Agent:
        leader = self.wait_leader()
        token = (
            self.control(leader.address)
            .CreateJoinToken(control_pb2.JoinTokenRequest(name=name), timeout=10)
            .token
        )
        ca_file = self.root / "cluster-ca.crt"
        ca_file.write_bytes(self.authority.trust_bundle())
        state = self.root / name
        state.mkdir(parents=True, exist_ok=True)
        agent = Agent(name, ip, state, self.root / f"{name}.log", mode=mode)
        agent.start(join_at or leader.join_address, ca_file, token)
        self.agents.append(agent)
        return agent

    def running(self) -> dict[str, list[str]]:
        """Workload id -> the nodes running a live copy of it."""
        out: dict[str, list[str]] = {}
        for agent in self.agents:
            for wid in agent.containers().values():
                out.setdefault(wid, []).append(agent.name)
        return out

    def stop(self) -> None:
        for agent in self.agents:
            agent.cleanup()
        for orch in self.orchestrators:
            orch.stop()
        etcdproc.stop_all(self.etcd)
        _unmount_under(self.root)


def _unmount_under(root: Path) -> None:
    """Agents killed with SIGKILL leave their secrets tmpfs mounted: take them down."""
    prefix = str(root.resolve()) + "/"
    with open("/proc/self/mounts") as mounts:
        points = [line.split()[1] for line in mounts if line.split()[1].startswith(prefix)]
    for point in sorted(points, reverse=True):
        subprocess.run(["umount", "-l", point], check=False, capture_output=True)


def start_cluster(root: Path, *, orchestrators: int = 3, members: int = 3) -> HACluster:
    root.mkdir(parents=True, exist_ok=True)
    etcd = etcdproc.cluster(root / "etcd", members)
    etcdproc.start_all(etcd)
    pki = root / "pki"
    Authority.init(pki, TD)
    cluster = HACluster(root, etcd, [], Authority.open(pki))
    try:
        for i in range(orchestrators):
            listen = f"127.0.0.1:{etcdproc.free_port()}"
            join = f"127.0.0.1:{etcdproc.free_port()}"
            orch = OrchestratorProcess(f"o{i + 1}", listen, join, root / f"o{i + 1}.log")
            orch.start(pki, cluster.endpoints)
            cluster.orchestrators.append(orch)
        cluster.wait_leader()
    except BaseException:
        cluster.stop()
        raise
    return cluster


def sleeper_app(name: str, replicas: int) -> topology_pb2.Application:
    return topology_pb2.Application(
        name=name,
        tenant="default",
        services=[
            topology_pb2.Service(
                name="web", image=IMAGE, command=["sleep", "3600"], replicas=replicas
            )
        ],
    )


def settled(cluster: HACluster, workload_ids: set[str], *, timeout: float) -> dict[str, list[str]]:
    """Wait until exactly ``workload_ids`` run, once each, and stay so for a moment."""
    last: list[dict[str, list[str]]] = [{}]

    def exact() -> bool:
        now = cluster.running()
        last[0] = now
        return set(now) == workload_ids and all(len(n) == 1 for n in now.values())

    wait_for(exact, timeout, f"{len(workload_ids)} workloads running once each: {last[0]}")
    time.sleep(1.0)  # a duplicate created late would show here
    return cluster.running()
