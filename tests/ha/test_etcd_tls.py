"""etcd secured by Capstan's PKI: client and peer mTLS from `capstan pki etcd`, a CA of
etcd's own, and nothing in the clear."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator import etcdproc
from orchestrator.cli import main
from orchestrator.errors import StoreUnavailable
from orchestrator.etcdproc import MemberTLS
from orchestrator.store.etcd import EtcdStore, EtcdTLS
from pki.authority import Authority

pytestmark = [pytest.mark.etcd]


@pytest.fixture
def tls_cluster(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> Iterator[tuple[list[etcdproc.Member], Path]]:
    if shutil.which("etcd") is None:
        pytest.skip("the etcd binary is not installed")
    pki = tmp_path / "pki"
    Authority.init(pki, "tls.test")
    names = ["etcd-1", "etcd-2", "etcd-3"]
    args = ["pki", "etcd", "--dir", str(pki), "--client", "orchestrator"]
    for name in names:
        args += ["--member", name]
    assert main(args) == 0
    assert "trusted by etcd only" in capsys.readouterr().out
    etcd = pki / "etcd"
    for key in etcd.glob("*.key"):
        assert key.stat().st_mode & 0o777 == 0o600
    tls = [MemberTLS(etcd / "ca.crt", etcd / f"{n}.crt", etcd / f"{n}.key") for n in names]
    members = etcdproc.cluster(tmp_path / "data", 3, tls=tls)
    etcdproc.start_all(members)
    try:
        _until_serving(members, pki)
        yield members, pki
    finally:
        etcdproc.stop_all(members)


def _until_serving(members: list[etcdproc.Member], pki: Path) -> None:
    """Three members on TLS elect a leader in a few seconds; more on a busy machine."""

    async def wait() -> None:
        endpoints = [m.client_endpoint for m in members]
        async with asyncio.timeout(60):
            while True:
                try:
                    await _roundtrip(endpoints, _client(pki), timeout=5.0, namespace="/ready")
                    return
                except StoreUnavailable:
                    continue

    asyncio.run(wait())


def _client(pki: Path, name: str = "client-orchestrator") -> EtcdTLS:
    etcd = pki / "etcd"
    return EtcdTLS(etcd / "ca.crt", etcd / f"{name}.crt", etcd / f"{name}.key")


async def _roundtrip(
    endpoints: list[str], tls: EtcdTLS | None, timeout: float = 15.0, namespace: str = "/tls"
) -> bytes:
    async with EtcdStore(endpoints, namespace=namespace, tls=tls, timeout=timeout) as store:
        await store.put("/k", b"v")
        entry = await store.get("/k")
        assert entry is not None
        return entry.value


def test_members_and_clients_speak_mtls_only(
    tls_cluster: tuple[list[etcdproc.Member], Path],
) -> None:
    members, pki = tls_cluster
    endpoints = [m.client_endpoint for m in members]
    # Three members formed a cluster over peer mTLS and serve an mTLS client.
    assert asyncio.run(_roundtrip(endpoints, _client(pki))) == b"v"
    for m in members:
        assert m.command(members)[m.command(members).index("--listen-peer-urls") + 1].startswith(
            "https://"
        )

    async def health() -> list[bool]:
        async with EtcdStore(endpoints, namespace="/tls", tls=_client(pki)) as store:
            return [h.healthy for h in await store.members()]

    assert asyncio.run(health()) == [True, True, True]


def test_a_plaintext_client_gets_nothing(tls_cluster: tuple[list[etcdproc.Member], Path]) -> None:
    members, _ = tls_cluster
    with pytest.raises(StoreUnavailable):
        asyncio.run(_roundtrip([members[0].client_endpoint], None, timeout=1.0))


def test_a_certificate_of_the_cluster_ca_is_not_an_etcd_client(
    tls_cluster: tuple[list[etcdproc.Member], Path], tmp_path: Path
) -> None:
    """A node's certificate (cluster CA) must not open the store to that node."""
    members, pki = tls_cluster
    node = Authority.open(pki).issue("node", "n1", ips=["127.0.0.1"])
    assert node.key_pem is not None
    (tmp_path / "n1.crt").write_bytes(node.chain_pem)
    (tmp_path / "n1.key").write_bytes(node.key_pem)
    tls = EtcdTLS(pki / "etcd" / "ca.crt", tmp_path / "n1.crt", tmp_path / "n1.key")
    with pytest.raises(StoreUnavailable):
        asyncio.run(_roundtrip([members[0].client_endpoint], tls, timeout=1.0))

    # And nothing was written by it.
    async def absent() -> bool:
        async with EtcdStore(
            [m.client_endpoint for m in members], namespace="/tls", tls=_client(pki)
        ) as store:
            return await store.get("/k") is None

    assert asyncio.run(absent())
