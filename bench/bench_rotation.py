"""Certificate and key lifecycle under load: renew every node certificate, renew the
orchestrator's, rotate the token key, rotate the CA, while token-authorized calls run
without pause (orchestrator -> every node, and node-1 -> node-2 on a delegation-style
token); then revoke a node and measure how long until every server refuses it.

Prints calls made, calls failed, how long each rotation took, and the revocation
latency from the command to the first refused call, per server.

    python bench/bench_rotation.py [--nodes 4]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import grpc
from cryptography import x509

from pki.certs import load_pem_chain, thumbprint
from pki.rotation import rotate_ca, rotation_status
from pki.tokenkeys import KeySet, TokenKeyStore
from protos import control_pb2, gateway_pb2, node_pb2
from protos.wire.errors import NodeCallError
from protos.wire.nodeclient import NodeClient
from tests.control_api.conftest import start_orchestrator, stop_orchestrator
from tests.lifecycle.conftest import Load, refresh_admin
from tests.security.conftest import Cluster, join_node


def wait(cond: Callable[[], object], timeout: float, what: str) -> float:
    start = time.monotonic()
    while not cond():
        if time.monotonic() - start > timeout:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.01)
    return time.monotonic() - start


def serial_of(c: Cluster, name: str) -> int:
    return x509.load_pem_x509_certificate(c.node_files(name)[0].read_bytes()).serial_number


def orchestrator_refuses(c: Cluster, name: str) -> bool:
    try:
        c.as_node(name).Complete(gateway_pb2.TaskResult(request_id="probe"), timeout=2)
    except grpc.RpcError as exc:
        return exc.code() == grpc.StatusCode.UNAUTHENTICATED
    return False


def node_refuses(c: Cluster, caller: str, target: str, token: str) -> bool:
    source = c.orch.orch.state.node(target)
    assert source is not None
    try:
        with NodeClient(
            source.address, credentials=c.node_credentials(caller), expect=source.id
        ) as client:
            client.call("node.info", node_pb2.NodeInfoRequest(), token, timeout=2)
    except NodeCallError as exc:
        return "revoked" in exc.details
    return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=4)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="capstan-bench-rotation-"))
    orch = start_orchestrator(root / "orch")
    lc = orch.orch.lifecycle
    assert lc is not None
    lc.settings.node_cert_ttl = 3600.0
    c = Cluster(orch, root)
    names = [f"node-{i}" for i in range(1, args.nodes + 1)]
    timings: list[tuple[str, float]] = []
    try:
        for i, name in enumerate(names):
            join_node(c, name, f"127.0.0.{41 + i}")
        tracker = orch.orch.reconciler.tracker
        wait(lambda: all(tracker.thumbprint(n) for n in names), 30, "report streams")
        load = Load(c).start()
        time.sleep(2.0)

        # 1. every node certificate renewed (new key, CSR, Renew, swap, reconnect)
        before = {n: serial_of(c, n) for n in names}
        start = time.monotonic()
        for n in names:
            renewer = c.nodes[n].renewer
            assert renewer is not None
            renewer.renew_now()

        def all_renewed() -> bool:
            for n in names:
                leaf = x509.load_pem_x509_certificate(c.node_files(n)[0].read_bytes())
                if leaf.serial_number == before[n] or tracker.thumbprint(n) != thumbprint(leaf):
                    return False
            return True

        wait(all_renewed, 30, "node renewals")
        timings.append((f"renew {len(names)} node certificates", time.monotonic() - start))
        time.sleep(1.0)

        # 2. the orchestrator's own certificate
        start = time.monotonic()
        orch.run(lc.step(now=lc.own.renew_at + 1))
        timings.append(("renew the orchestrator certificate", time.monotonic() - start))
        time.sleep(1.0)

        # 3. token key: staged switch, then retirement of the old key everywhere
        minter = orch.orch.reconciler.caller._minter
        store = TokenKeyStore.open(orch.authority.directory / "token-keys")
        start = time.monotonic()
        new = store.rotate()
        wait(lambda: minter.kid == new, 30, "token key switch")
        timings.append(("token key: pushed, acknowledged, switched", time.monotonic() - start))
        time.sleep(1.0)
        start = time.monotonic()
        orch.run(lc.step(now=time.time() + lc.settings.token_lifetime + 60))
        wait(
            lambda: all(
                set(KeySet.from_file(root / n / "jwks.json").kids) == {new} for n in names
            ),
            30,
            "old key retired on every node",
        )
        timings.append(("token key: old key retired everywhere", time.monotonic() - start))
        time.sleep(1.0)

        # 4. CA rotation: bundle pushed, every node re-issued in batches, old CA dropped
        pki = orch.authority.directory
        start = time.monotonic()
        rotation = rotate_ca(pki)
        wait(
            lambda: all(
                n.issuer_ca == rotation.new_intermediate for n in orch.orch.state.all_nodes()
            ),
            60,
            "nodes re-issued",
        )
        timings.append(("CA rotation: every node re-issued", time.monotonic() - start))
        refresh_admin(c)  # the operator re-issues their own certificate
        c.admin().ListNodes(control_pb2.ListNodesRequest())
        lc.ca_rotation.finish_now()
        wait(lambda: rotation_status(pki) is None, 30, "rotation finished")
        wait(
            lambda: all(
                [thumbprint(r) for r in load_pem_chain((root / n / "ca.crt").read_bytes())]
                == [rotation.new_root]
                for n in names
            ),
            30,
            "old root dropped on every node",
        )
        timings.append(("CA rotation: old root dropped everywhere", time.monotonic() - start))
        time.sleep(2.0)
        load.stop()

        # 5. revocation latency: node-N revoked; every server probed until it refuses
        victim = names[-1]
        probes: dict[str, Callable[[], bool]] = {
            "orchestrator": lambda: orchestrator_refuses(c, victim)
        }
        victim_rec = orch.orch.state.node(victim)
        assert victim_rec is not None
        for n in names[:-1]:
            target = orch.orch.state.node(n)
            assert target is not None
            token = str(
                orch.run(
                    minter.mint(
                        sub=victim_rec.id,
                        cnf=tracker.thumbprint(victim),
                        aud=target.id,
                        op="node.info",
                        res="*",
                        ttl=30.0,
                        why="revocation probe",
                        audit=False,
                    )
                )
            )
            probes[n] = lambda n=n, token=token: node_refuses(c, victim, n, token)  # type: ignore[misc]
        latency: dict[str, float] = {}
        command = time.monotonic()
        threads = []

        def probe(server: str, check: Callable[[], bool]) -> None:
            while not check():
                time.sleep(0.005)
            latency[server] = time.monotonic() - command

        c.admin().RevokeNode(control_pb2.RevokeNodeRequest(name=victim))
        for server, check in probes.items():
            t = threading.Thread(target=probe, args=(server, check), daemon=True)
            t.start()
            threads.append(t)
        for t in threads:
            t.join(10)
    finally:
        for node in c.nodes.values():
            node.stop(0)
        stop_orchestrator(orch)

    print(f"nodes: {len(names)}")
    print(f"calls made: {load.calls}")
    print(f"calls failed: {len(load.failures)}")
    for failure in load.failures[:10]:
        print(f"  {failure}")
    for what, seconds in timings:
        print(f"{what}: {seconds:.2f} s")
    print(f"revocation of {victim}, from the command to the first refused call:")
    for server in probes:
        took = f"{latency[server] * 1000:.0f} ms" if server in latency else "not refused"
        print(f"  {server}: {took}")
    print(f"  slowest: {max(latency.values()) * 1000:.0f} ms")


if __name__ == "__main__":
    main()
