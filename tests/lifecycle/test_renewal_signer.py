"""A renewal records the CA that signed the certificate, even when a CA rotation
replaces the signing authority while the signature is being made."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import NoReturn

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from orchestrator.audit import AuditLog
from orchestrator.ca import CurrentAuthority
from orchestrator.config import LifecycleSettings
from orchestrator.nodecerts import NodeCertificates
from orchestrator.state import ClusterState
from orchestrator.store.sqlite import SqliteStore
from pki.authority import Authority, Issued
from pki.certs import thumbprint
from pki.identity import Kind
from pki.peers import authenticate
from protos import control_pb2, gateway_pb2

TD = "renewal.test"


class _NoAbort:
    """The servicer context: renew must not abort here."""

    async def abort(self, code: grpc.StatusCode, details: str) -> NoReturn:
        raise AssertionError(f"renew aborted: {code} {details}")


def _csr() -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "renewal-test")])
    csr = x509.CertificateSigningRequestBuilder().subject_name(subject).sign(key, hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.PEM)


def test_a_ca_swapped_during_the_signature_is_not_the_one_recorded(tmp_path: Path) -> None:
    asyncio.run(_renew_across_a_ca_swap(tmp_path))


async def _renew_across_a_ca_swap(tmp_path: Path) -> None:
    old = Authority.init(tmp_path / "old", TD)
    new = Authority.init(tmp_path / "new", TD)
    current = CurrentAuthority(old)
    sign_with_old = old.sign_csr

    def sign_then_rotate(*args: object, **kwargs: object) -> Issued:
        # The rotation lands after the old CA signed and before the record is written.
        issued = sign_with_old(*args, **kwargs)  # type: ignore[arg-type]
        current.replace(new)
        return issued

    old.sign_csr = sign_then_rotate  # type: ignore[method-assign]

    store = SqliteStore(tmp_path / "store.db")
    await store.open()
    try:
        state = ClusterState(store)
        await state.load()
        first = old.issue(Kind.NODE, "n1")
        caller = authenticate([first.cert_pem], trust_domain=TD, revoked=frozenset)
        node = control_pb2.NodeRecord(
            name="n1",
            id=first.identity.uri,
            state="ready",
            cert_serial=f"{first.serial:X}",
            issuer_ca=thumbprint(old.intermediate),
        )
        async with state.lock:
            await state.save_node(node)
        certs = NodeCertificates(
            ca=current,
            state=state,
            audit=AuditLog(store, time.time),
            settings=LifecycleSettings(),
            clock=time.time,
        )
        reply = await certs.renew(
            node,
            caller,
            gateway_pb2.RenewRequest(csr_pem=_csr()),
            _NoAbort(),  # type: ignore[arg-type]
        )
        chain = x509.load_pem_x509_certificates(reply.certificate_chain)
        assert chain[1] == old.intermediate  # signed by the old CA...
        record = state.node("n1")
        assert record is not None
        # ...so the record names the old CA: the CA rotation re-issues this node.
        assert record.issuer_ca == thumbprint(old.intermediate)
        assert record.issuer_ca != thumbprint(new.intermediate)
        # and the bundle handed out is the one that verifies that chain.
        assert reply.trust_bundle == old.trust_bundle()
    finally:
        await store.close()
