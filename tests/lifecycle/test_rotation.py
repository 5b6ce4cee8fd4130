"""Token-key and CA rotation on a running cluster under sustained load: zero failed
calls; the old key and the old CA are dropped only when nothing depends on them."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from pki.authority import (
    INTERMEDIATE_CERT,
    INTERMEDIATE_KEY,
    ROOT_CERT,
    ROOT_KEY,
    TRUST_BUNDLE,
)
from pki.certs import load_pem_chain, thumbprint
from pki.rotation import CROSS_CERT, rotate_ca, rotation_status
from pki.state import locked
from pki.tokenkeys import KeySet, TokenKeyStore
from protos import control_pb2
from tests.control_api.conftest import start_orchestrator, stop_orchestrator
from tests.security.conftest import Cluster
from tests.waiting import wait_for

from .conftest import Load, audit_events, lifecycle_of, refresh_admin


def node_kids(c: Cluster, name: str) -> set[str]:
    return set(KeySet.from_file(c.root / name / "jwks.json").kids)


def test_token_key_rotation_is_staged_and_the_old_key_retired_after_its_last_token(
    cluster: Cluster,
) -> None:
    lc = lifecycle_of(cluster)
    minter = cluster.orch.orch.reconciler.caller._minter
    old = minter.kid
    load = Load(cluster).start()
    try:
        load.more(10)
        store = TokenKeyStore.open(cluster.orch.authority.directory / "token-keys")
        new = store.rotate()  # what `capstan pki rotate-token-key` does, from outside
        # Nodes trust the new key before the minter signs with it.
        wait_for(lambda: minter.kid == new, timeout=10, what="the minter to switch")
        for name in ("node-1", "node-2"):
            assert {old, new} <= node_kids(cluster, name)
        load.more(20)
        # Past the last token the old key signed: retired in the store and on every node.
        cluster.orch.run(lc.step(now=time.time() + lc.settings.token_lifetime + 60))
        for name in ("node-1", "node-2"):
            wait_for(
                lambda n=name: node_kids(cluster, n) == {new},  # type: ignore[misc]
                timeout=5,
                what=f"{name} to drop the old key",
            )
        assert [e.kid for e in TokenKeyStore.open(store.path).entries if e.state != "retired"] == [
            new
        ]
        load.more(10)
    finally:
        load.stop()
    assert load.failures == []
    assert load.calls > 20
    switched = audit_events(cluster, "token_key.switched")
    assert [(e["previous"], e["kid"], e["unacked"]) for e in switched] == [(old, new, [])]
    assert [e["kid"] for e in audit_events(cluster, "token_key.retired")] == [old]



def test_ca_rotation_under_load_without_a_failed_call(cluster: Cluster) -> None:
    lc = lifecycle_of(cluster)
    pki = cluster.orch.authority.directory
    load = Load(cluster).start()
    try:
        load.more(10)
        rotation = rotate_ca(pki)  # `capstan pki rotate-ca`, from outside
        # Every node trusts both roots, then is re-issued under the new CA.
        wait_for(
            lambda: all(
                (n.issuer_ca == rotation.new_intermediate)
                for n in cluster.orch.orch.state.all_nodes()
            ),
            timeout=30,
            what="every node re-issued under the new CA",
        )
        for name in ("node-1", "node-2"):
            roots = load_pem_chain((cluster.root / name / "ca.crt").read_bytes())
            assert {thumbprint(r) for r in roots} == {rotation.old_root, rotation.new_root}
        assert thumbprint(lc.authority.intermediate) == rotation.new_intermediate
        # Still overlapping: the test's admin certificate chains to the old CA.
        status = cluster.admin().PkiStatus(control_pb2.PkiStatusRequest())
        assert status.rotation.startswith("overlap")
        assert {c.issuer_ca for c in status.certificates} == {rotation.new_intermediate}
        assert rotation_status(pki) is not None
        # The operator re-issues their own certificate: nothing depends on the old CA.
        refresh_admin(cluster)
        cluster.admin().ListNodes(control_pb2.ListNodesRequest())
        lc.ca_rotation.finish_now()  # check again now rather than in 5 s
        wait_for(lambda: rotation_status(pki) is None, timeout=10, what="the rotation finished")
        for name in ("node-1", "node-2"):
            wait_for(
                lambda n=name: [
                    thumbprint(r)
                    for r in load_pem_chain((cluster.root / n / "ca.crt").read_bytes())
                ]
                == [rotation.new_root],
                timeout=10,
                what=f"{name} to drop the old root",
            )
        load.more(20)
        status = cluster.admin().PkiStatus(control_pb2.PkiStatusRequest())
        assert status.rotation == ""
        assert list(status.trusted_roots) == [rotation.new_root]
        load.at_least(51)
    finally:
        load.stop()
    assert load.failures == []
    assert load.calls > 50
    assert len(audit_events(cluster, "ca.rotation_finished")) == 1


def test_a_ca_rotation_read_half_written_is_not_adopted(tmp_path: Path) -> None:
    """Regression: `rotate-ca` writes the new trust bundle before the new intermediate.
    The orchestrator took the bundle with the old intermediate, then renewed every
    node under the CA being retired, for good: nodes were never re-issued (the
    rotation test failed one run in four)."""
    orch = start_orchestrator(tmp_path / "orch")
    try:
        lc = orch.orch.lifecycle
        assert lc is not None
        pki = orch.authority.directory
        before = thumbprint(lc.authority.intermediate), lc.authority.trust_bundle()
        # The same rotation, made on a copy, is copied in the order rotate-ca writes it.
        rotated = tmp_path / "rotated"
        shutil.copytree(pki, rotated)
        rotation = rotate_ca(rotated)
        first = [TRUST_BUNDLE, ROOT_KEY, ROOT_CERT, CROSS_CERT]
        rest = [INTERMEDIATE_KEY, INTERMEDIATE_CERT, "rotation.json"]
        with locked(pki):  # as the writer holds it
            shutil.copytree(rotated / "previous", pki / "previous")
            for name in first:
                shutil.copy2(rotated / name, pki / name)
        orch.run(lc.ca_rotation.step())
        # Midway: the new bundle, the old intermediate, no rotation on record yet.
        assert (thumbprint(lc.authority.intermediate), lc.authority.trust_bundle()) == before
        with locked(pki):
            for name in rest:
                shutil.copy2(rotated / name, pki / name)
        orch.run(lc.ca_rotation.step())
        assert thumbprint(lc.authority.intermediate) == rotation.new_intermediate
        assert {thumbprint(r) for r in lc.authority.trust_roots()} == {
            rotation.old_root,
            rotation.new_root,
        }
    finally:
        stop_orchestrator(orch)
