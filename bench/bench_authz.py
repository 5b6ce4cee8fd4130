"""The per-call cost of the orchestrator's authorization interceptor
(``orchestrator.authz``): the same unary ControlService call over real mTLS on
loopback, served once behind ``AuthorizationInterceptor`` (peer certificate parsed
and checked, trust domain, revocation, the method's rule, a ``UserCall`` built) and
once without it (the handler given a ``UserCall`` made in advance). Revocation is read
as the orchestrator reads it (``RevokedSerials`` over the PKI's state file). Both servers run
in this process, the rounds alternate, and the ratio is against the baseline
measured in the same run.

    python bench/bench_authz.py [--calls 3000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import grpc
import grpc.aio

from orchestrator.authz import AuthorizationInterceptor, Gate, UserCall
from orchestrator.revocations import RevokedSerials
from pki.authority import Authority
from pki.peers import Peer, authenticate
from protos import control_pb2, control_pb2_grpc
from protos.wire.channel import client_credentials

TD = "bench.capstan"
METHOD = "Version"


class _Checked(control_pb2_grpc.ControlServiceServicer):  # type: ignore[misc]
    """The handler as the orchestrator registers it: it takes the authorized call."""

    async def Version(self, request: Any, context: Any, call: UserCall) -> Any:
        return control_pb2.VersionInfo(version=call.caller.name)


class _Bare(control_pb2_grpc.ControlServiceServicer):  # type: ignore[misc]
    """The same handler, served without the interceptor: the call is made in advance."""

    def __init__(self, call: UserCall) -> None:
        self._call = call
        self._inner = _Checked()

    async def Version(self, request: Any, context: Any) -> Any:
        return await self._inner.Version(request, context, self._call)


async def _noop(*_args: Any, **_kw: Any) -> None:
    return None


async def _serve(
    authority: Authority, servicer: Any, interceptors: list[Any]
) -> tuple[grpc.aio.Server, str]:
    issued = authority.issue("orchestrator", "bench", ips=["127.0.0.1"])
    assert issued.key_pem is not None
    server = grpc.aio.server(interceptors=interceptors)
    control_pb2_grpc.add_ControlServiceServicer_to_server(servicer, server)
    creds = grpc.ssl_server_credentials(
        [(issued.key_pem, issued.chain_pem)],
        root_certificates=authority.trust_bundle(),
        require_client_auth=True,
    )
    port = server.add_secure_port("127.0.0.1:0", creds)
    await server.start()
    return server, f"127.0.0.1:{port}"


async def _time(stub: Any, calls: int) -> float:
    """Seconds per call, ``calls`` sequential calls on one channel."""
    request = control_pb2.VersionRequest()
    start = time.perf_counter()
    for _ in range(calls):
        await stub.Version(request, timeout=10)
    return (time.perf_counter() - start) / calls


async def _run(calls: int, rounds: int, root: Path) -> tuple[list[float], list[float]]:
    authority = Authority.init(root / "pki", TD)
    admin = authority.issue("user", "admin", role="admin")
    assert admin.key_pem is not None
    peer: Peer = authenticate([admin.chain_pem], trust_domain=TD, revoked=frozenset)
    # The orchestrator's own revocation source: the PKI state file, as it checks it.
    revoked = RevokedSerials(root / "pki")
    gate = Gate(
        trust_domain=TD, revoked=revoked, bell=revoked.bell, nodes=lambda _name: None,
        record=_noop,
    )
    checked, checked_at = await _serve(authority, _Checked(), [AuthorizationInterceptor(gate)])
    bare, bare_at = await _serve(authority, _Bare(UserCall(peer)), [])
    creds = client_credentials(admin.chain_pem, admin.key_pem, authority.trust_bundle())
    with_gate: list[float] = []
    without: list[float] = []
    async with (
        grpc.aio.secure_channel(checked_at, creds) as c1,
        grpc.aio.secure_channel(bare_at, creds) as c2,
    ):
        s1, s2 = control_pb2_grpc.ControlServiceStub(c1), control_pb2_grpc.ControlServiceStub(c2)
        # Warm both (handshake, first-call paths) before timing.
        await _time(s1, 50)
        await _time(s2, 50)
        for _ in range(rounds):
            without.append(await _time(s2, calls))
            with_gate.append(await _time(s1, calls))
    await checked.stop(0)
    await bare.stop(0)
    return with_gate, without


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=3000, help="calls per round and server")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        with_gate, without = asyncio.run(_run(args.calls, args.rounds, Path(tmp)))
    gated, bare = statistics.median(with_gate), statistics.median(without)
    print(f"ControlService.{METHOD}, {args.calls} sequential calls x {args.rounds} rounds (median)")
    print("| path | µs per call |")
    print("| --- | --- |")
    print(f"| without the interceptor (baseline) | {bare * 1e6:.0f} |")
    print(f"| behind AuthorizationInterceptor | {gated * 1e6:.0f} |")
    print(f"interceptor cost: {(gated - bare) * 1e6:.0f} µs per call; ratio {gated / bare:.2f}x")


if __name__ == "__main__":
    main()
