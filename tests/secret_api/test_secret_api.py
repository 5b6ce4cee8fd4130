"""Secrets on the orchestrator: who may create, read and rotate them, and that the
value is nowhere but in its envelope (real orchestrator, real SQLite store)."""

from __future__ import annotations

import grpc
import pytest

from orchestrator.secrets import label
from orchestrator.store import keys
from pki.secretkeys import Envelope, SecretKeyStore, SecretSealError
from protos import control_pb2, secrets_pb2, secrets_pb2_grpc, topology_pb2
from tests.control_api.conftest import Running

CANARY = b"canary-7f3c9b1e-do-not-leak"
DENIED = grpc.StatusCode.PERMISSION_DENIED


def secrets_as(orch: Running, name: str, role: str) -> secrets_pb2_grpc.SecretServiceStub:
    return secrets_pb2_grpc.SecretServiceStub(
        grpc.secure_channel(orch.target, orch.user(name, role))
    )


def app_using(secret: str, tenant: str = "acme") -> control_pb2.ApplyRequest:
    return control_pb2.ApplyRequest(
        app=topology_pb2.Application(
            name="shop",
            tenant=tenant,
            services=[
                topology_pb2.Service(
                    name="db",
                    image="local/busybox:1",
                    command=["sleep", "600"],
                    secrets=[topology_pb2.ServiceSecret(name=secret, path="/run/secrets/pw")],
                )
            ],
        )
    )


def store_bytes(orch: Running) -> bytes:
    return b"".join(p.read_bytes() for p in orch.root.glob("store.db*"))


def test_create_describe_list_never_show_the_value(orchestrator: Running) -> None:
    acme = secrets_as(orchestrator, "alice", "tenant:acme")
    info = acme.CreateSecret(secrets_pb2.SecretWrite(name="db-pass", value=CANARY))
    assert (info.tenant, info.name, info.version) == ("acme", "db-pass", 1)
    assert len(info.fingerprint) == 12 and info.fingerprint not in CANARY.decode()
    described = acme.DescribeSecret(secrets_pb2.SecretRef(name="db-pass"))
    listed = acme.ListSecrets(secrets_pb2.SecretListRequest()).secrets
    for message in (info, described, *listed):
        assert CANARY not in message.SerializeToString()
    # At rest: the store holds the envelope only; the audit names the event, not the value.
    assert CANARY not in store_bytes(orchestrator)
    audit = orchestrator.run(orchestrator.orch.audit.entries())
    assert any(e["event"] == "secret.created" for e in audit)  # type: ignore[index,union-attr]
    assert CANARY.decode() not in repr(audit)


def test_another_tenant_cannot_read_list_rotate_or_delete(orchestrator: Running) -> None:
    secrets_as(orchestrator, "alice", "tenant:acme").CreateSecret(
        secrets_pb2.SecretWrite(name="db-pass", value=CANARY)
    )
    mallory = secrets_as(orchestrator, "mallory", "tenant:evil")
    ref = secrets_pb2.SecretRef(tenant="acme", name="db-pass")
    for call, request in (
        (mallory.DescribeSecret, ref),
        (mallory.DeleteSecret, ref),
        (mallory.RotateSecret, secrets_pb2.SecretWrite(tenant="acme", name="db-pass", value=b"x")),
        (mallory.CreateSecret, secrets_pb2.SecretWrite(tenant="acme", name="other", value=b"x")),
    ):
        with pytest.raises(grpc.RpcError) as err:
            call(request)
        assert err.value.code() == DENIED
    assert list(mallory.ListSecrets(secrets_pb2.SecretListRequest()).secrets) == []
    assert [
        s.name for s in mallory.ListSecrets(secrets_pb2.SecretListRequest(tenant="acme")).secrets
    ] == []
    # Nothing changed: still version 1, and no "other" was created in acme.
    admin = secrets_as(orchestrator, "admin", "admin")
    assert [
        (s.name, s.version) for s in admin.ListSecrets(secrets_pb2.SecretListRequest()).secrets
    ] == [("db-pass", 1)]


def test_viewer_sees_names_and_versions_only(orchestrator: Running) -> None:
    secrets_as(orchestrator, "alice", "tenant:acme").CreateSecret(
        secrets_pb2.SecretWrite(name="db-pass", value=CANARY)
    )
    viewer = secrets_as(orchestrator, "vic", "viewer")
    listed = viewer.ListSecrets(secrets_pb2.SecretListRequest()).secrets
    assert [(s.tenant, s.name, s.version) for s in listed] == [("acme", "db-pass", 1)]
    with pytest.raises(grpc.RpcError) as err:
        viewer.CreateSecret(secrets_pb2.SecretWrite(tenant="acme", name="x", value=b"x"))
    assert err.value.code() == DENIED


def test_apply_refuses_a_missing_or_foreign_secret(orchestrator: Running) -> None:
    secrets_as(orchestrator, "alice", "tenant:acme").CreateSecret(
        secrets_pb2.SecretWrite(name="db-pass", value=CANARY)
    )
    acme = orchestrator.control("alice", "tenant:acme")
    with pytest.raises(grpc.RpcError) as err:
        acme.Apply(app_using("nope"))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "services.db.secrets[0].name" in (err.value.details() or "")
    # acme's secret, named from another tenant's application: it does not exist there.
    evil = orchestrator.control("mallory", "tenant:evil")
    with pytest.raises(grpc.RpcError) as err:
        evil.Apply(app_using("db-pass", tenant="evil"))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert list(orchestrator.control().ListApps(control_pb2.ListAppsRequest()).apps) == []
    acme.Apply(app_using("db-pass"))


def test_rotate_gives_a_new_version_and_delete_waits_for_its_users(
    orchestrator: Running,
) -> None:
    acme = secrets_as(orchestrator, "alice", "tenant:acme")
    first = acme.CreateSecret(secrets_pb2.SecretWrite(name="db-pass", value=CANARY))
    orchestrator.control("alice", "tenant:acme").Apply(app_using("db-pass"))
    second = acme.RotateSecret(secrets_pb2.SecretWrite(name="db-pass", value=b"new value"))
    assert second.version == 2 and second.fingerprint != first.fingerprint
    assert [(u.app, u.service) for u in second.used_by] == [("shop", "db")]
    with pytest.raises(grpc.RpcError) as err:
        acme.DeleteSecret(secrets_pb2.SecretRef(name="db-pass"))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    value, version = orchestrator.run(orchestrator.orch.secrets.reveal("acme", "db-pass"))  # type: ignore[misc]
    assert (value, version) == (b"new value", 2)


def test_an_envelope_moved_to_another_record_does_not_open(orchestrator: Running) -> None:
    secrets_as(orchestrator, "alice", "tenant:acme").CreateSecret(
        secrets_pb2.SecretWrite(name="db-pass", value=CANARY)
    )
    store = orchestrator.orch.state.store
    entry = orchestrator.run(store.get(keys.secret("acme", "db-pass")))
    record = secrets_pb2.SecretRecord.FromString(entry.value)  # type: ignore[union-attr]
    record.tenant = "evil"  # a store writer copies acme's envelope into evil's name
    orchestrator.run(store.put(keys.secret("evil", "db-pass"), record.SerializeToString()))
    with pytest.raises(SecretSealError):
        orchestrator.run(orchestrator.orch.secrets.reveal("evil", "db-pass"))


def test_key_encryption_key_rotation_rewraps_every_record(orchestrator: Running) -> None:
    acme = secrets_as(orchestrator, "alice", "tenant:acme")
    acme.CreateSecret(secrets_pb2.SecretWrite(name="db-pass", value=CANARY))
    kek = SecretKeyStore.open(orchestrator.orch.config.pki_dir / "secret-keys")
    old = kek.active_kid
    service = orchestrator.orch.secrets
    service.use_keys(SecretKeyStore.open(kek.path))
    new = kek.rotate()
    service.use_keys(SecretKeyStore.open(kek.path))
    assert orchestrator.run(service.rewrap_all()) == 1
    entry = orchestrator.run(orchestrator.orch.state.store.get(keys.secret("acme", "db-pass")))
    record = secrets_pb2.SecretRecord.FromString(entry.value)  # type: ignore[union-attr]
    assert record.kek_id == new != old
    assert orchestrator.run(service.reveal("acme", "db-pass")) == (CANARY, 1)
    fresh = SecretKeyStore.open(kek.path)
    fresh.retire(old, in_use=False)
    assert old not in SecretKeyStore.open(kek.path).kids
    env = Envelope(record.kek_id, record.wrapped_dek, record.nonce, record.ciphertext, "")
    assert fresh.open_envelope(env, label("acme", "db-pass", 1)) == CANARY
