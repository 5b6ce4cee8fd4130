"""A real orchestrator (grpc.aio, SQLite store) on loopback, run in a background thread."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from orchestrator.config import OrchestratorConfig
from orchestrator.server import Orchestrator, start
from pki.authority import Authority
from protos import control_pb2_grpc, gateway_pb2_grpc
from protos.wire.channel import client_credentials

TD = "orch.test"


@dataclass
class Running:
    orch: Orchestrator
    loop: asyncio.AbstractEventLoop
    authority: Authority
    root: Path
    target: str
    join_target: str

    def run(self, coro: object) -> object:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)  # type: ignore[arg-type]

    def user(self, name: str, role: str) -> grpc.ChannelCredentials:
        issued = self.authority.issue("user", name, role=role)
        assert issued.key_pem is not None
        return client_credentials(issued.chain_pem, issued.key_pem, self.authority.trust_bundle())

    def control(
        self, name: str = "admin", role: str = "admin"
    ) -> control_pb2_grpc.ControlServiceStub:
        return control_pb2_grpc.ControlServiceStub(
            grpc.secure_channel(self.target, self.user(name, role))
        )

    def join_stub(self) -> gateway_pb2_grpc.NodeGatewayStub:
        creds = grpc.ssl_channel_credentials(self.authority.trust_bundle())
        return gateway_pb2_grpc.NodeGatewayStub(grpc.secure_channel(self.join_target, creds))


def start_orchestrator(
    root: Path,
    *,
    pki: Path | None = None,
    port: int = 0,
    heartbeat: float = 0.5,
    grace: float = 2.0,
    host: str = "127.0.0.1",
    reconcile_interval: float = 0.2,
) -> Running:
    pki = pki or root / "pki"
    if not (pki / "state.json").exists():
        Authority.init(pki, TD)
    authority = Authority.open(pki)
    config = OrchestratorConfig(
        pki_dir=pki,
        store=root / "store.db",
        listen=f"{host}:{port}",
        join_listen=f"{host}:0",
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
        orch, loop, authority, root, f"{host}:{orch.port}", f"{host}:{orch.join_port}"
    )


def stop_orchestrator(r: Running) -> None:
    asyncio.run_coroutine_threadsafe(r.orch.stop(0), r.loop).result(30)
    r.loop.call_soon_threadsafe(r.loop.stop)


@pytest.fixture
def orchestrator(tmp_path: Path) -> Iterator[Running]:
    r = start_orchestrator(tmp_path)
    yield r
    stop_orchestrator(r)
