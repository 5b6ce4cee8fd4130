"""SecretService: tenant-scoped secrets, kept in the store as envelopes only.

Who may do what is the authorization interceptor's table (orchestrator.authz):
admins and the owning tenant write, viewers and the tenant read names, versions and
uses. No answer, error, log line or audit event carries a value; the value exists in
clear only in ``reveal``, for the moment it takes to seal it to one node's key.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc
from nacl.public import PublicKey, SealedBox

from orchestrator.audit import AuditLog
from orchestrator.authz import Access, UserCall, may
from orchestrator.errors import Conflict, OrchestratorError
from orchestrator.state import ClusterState
from orchestrator.store import keys
from pki.errors import CapstanError
from pki.secretkeys import Envelope, SecretKeyStore
from protos import node_pb2, secrets_pb2, secrets_pb2_grpc, topology_pb2
from protos.wire import rules

log = logging.getLogger("capstan.orchestrator.secrets")

#: The largest value a secret may hold: files of keys and passwords, not data sets.
MAX_VALUE = 64 * 1024

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])


class SecretNotFound(OrchestratorError):
    """No such secret in that tenant (NOT_FOUND)."""


class SecretExists(OrchestratorError):
    """A secret of that name already exists in that tenant (ALREADY_EXISTS)."""


class SecretInUse(OrchestratorError):
    """The secret is referenced by an application (FAILED_PRECONDITION)."""


class BadSecret(OrchestratorError):
    """A secret's name or value is unusable (INVALID_ARGUMENT)."""


_STATUS: tuple[tuple[type[Exception], grpc.StatusCode], ...] = (
    (SecretNotFound, grpc.StatusCode.NOT_FOUND),
    (SecretExists, grpc.StatusCode.ALREADY_EXISTS),
    (SecretInUse, grpc.StatusCode.FAILED_PRECONDITION),
    (BadSecret, grpc.StatusCode.INVALID_ARGUMENT),
    (Conflict, grpc.StatusCode.ABORTED),
)


def _errors(fn: F) -> F:
    @functools.wraps(fn)
    async def run(self: SecretService, request: Any, context: Any, call: UserCall) -> Any:
        try:
            return await fn(self, request, context, call)
        except CapstanError as exc:
            code = next((c for cls, c in _STATUS if isinstance(exc, cls)), None)
            if code is None:
                # The reason may name a record; never a value (nothing here holds one).
                log.error("secret call %s failed: %s", fn.__name__, exc)
                await context.abort(grpc.StatusCode.INTERNAL, "the secret could not be handled")
            await context.abort(code, str(exc))

    return run  # type: ignore[return-value]


def label(tenant: str, name: str, version: int) -> str:
    """What binds an envelope to its record: moved elsewhere in the store, it fails."""
    return f"{tenant}/{name}@{version}"


def _envelope(record: secrets_pb2.SecretRecord) -> Envelope:
    return Envelope(
        record.kek_id, record.wrapped_dek, record.nonce, record.ciphertext, record.fingerprint
    )


def _check_name(name: str) -> str:
    problem = rules.check_dns_label(name)
    if problem:
        raise BadSecret(f"name: {problem}")
    return name


def _check_value(value: bytes) -> bytes:
    if not value:
        raise BadSecret("value: a secret must not be empty")
    if len(value) > MAX_VALUE:
        raise BadSecret(f"value: larger than {MAX_VALUE} bytes")
    return value


class SecretService(secrets_pb2_grpc.SecretServiceServicer):  # type: ignore[misc]
    def __init__(
        self,
        *,
        state: ClusterState,
        kek: SecretKeyStore,
        audit: AuditLog,
        clock: Callable[[], float],
        on_rotated: Callable[[str, str], Awaitable[int]] | None = None,
    ) -> None:
        self._on_rotated = on_rotated
        self._state = state
        self._kek = kek
        self._audit = audit
        self._clock = clock
        # The envelopes of every secret, by (tenant, name): sealing for a node happens
        # inside the reconciler's synchronous spec translation. The leader is the only
        # writer; load() re-reads them at each election.
        self._records: dict[tuple[str, str], secrets_pb2.SecretRecord] = {}
        # One seal per (secret version, node key): a pull node's assignments stay the
        # same bytes until a rotation (its Watch sends only what changed), and the value
        # is opened once per version and node rather than at every poll.
        self._seals: dict[tuple[str, str, int, bytes], bytes] = {}

    async def load(self) -> None:
        self._records = {
            (r.tenant, r.name): r
            for r in (
                secrets_pb2.SecretRecord.FromString(e.value)
                for e in (await self._state.store.range(keys.SECRETS)).entries
            )
        }

    def seal(
        self, tenant: str, node_key: bytes, ref: topology_pb2.ServiceSecret
    ) -> node_pb2.SealedSecret:
        """``ref``'s current value sealed to one node's X25519 key; only that node can
        open it. The clear value lives for the length of this call."""
        record = self._records.get((tenant, ref.name))
        if record is None:
            raise SecretNotFound(f"secret {tenant}/{ref.name} not found")
        if len(node_key) != 32:
            raise BadSecret("the node registered no seal key: it cannot hold secrets")
        key = (tenant, ref.name, record.version, bytes(node_key))
        sealed = self._seals.get(key)
        if sealed is None:
            value = self._kek.open_envelope(
                _envelope(record), label(record.tenant, record.name, record.version)
            )
            sealed = SealedBox(PublicKey(node_key)).encrypt(value)
            # Older versions' seals go: a rotated value is never sealed out again.
            for old in [k for k in self._seals if k[:2] == key[:2] and k[2] != key[2]]:
                del self._seals[old]
            self._seals[key] = sealed
        return node_pb2.SealedSecret(
            name=ref.name, path=ref.path, env=ref.env, version=record.version, sealed=sealed
        )

    def use_keys(self, kek: SecretKeyStore) -> None:
        """Switch to a re-read key store (after a key-encryption key rotation)."""
        self._kek = kek

    # -- records ----------------------------------------------------------------------

    async def record(self, tenant: str, name: str) -> secrets_pb2.SecretRecord | None:
        entry = await self._state.store.get(keys.secret(tenant, name))
        if entry is None:
            return None
        return secrets_pb2.SecretRecord.FromString(entry.value)

    async def _record_and_revision(
        self, tenant: str, name: str
    ) -> tuple[secrets_pb2.SecretRecord, int]:
        entry = await self._state.store.get(keys.secret(tenant, name))
        if entry is None:
            raise SecretNotFound(f"secret {tenant}/{name} not found")
        return secrets_pb2.SecretRecord.FromString(entry.value), entry.revision

    async def reveal(self, tenant: str, name: str) -> tuple[bytes, int]:
        """The current value and version, to seal for one node at once; never stored."""
        record, _ = await self._record_and_revision(tenant, name)
        value = self._kek.open_envelope(
            _envelope(record), label(record.tenant, record.name, record.version)
        )
        return value, record.version

    async def missing(self, app: topology_pb2.Application) -> list[str]:
        """The ``services.S.secrets[i].name`` fields naming no secret of the app's tenant."""
        out = []
        for s in app.services:
            for i, ref in enumerate(s.secrets):
                if await self._state.store.get(keys.secret(app.tenant, ref.name)) is None:
                    out.append(
                        f"services.{s.name}.secrets[{i}].name: no secret {ref.name!r}"
                        f" in tenant {app.tenant}"
                    )
        return out

    def _uses(self, tenant: str, name: str) -> list[secrets_pb2.SecretUse]:
        uses = []
        for record in self._state.peek_apps():
            if record.app.tenant != tenant or record.deleting:
                continue
            for s in record.app.services:
                if any(ref.name == name for ref in s.secrets):
                    nodes = sorted(
                        {
                            w.node
                            for w in self._state.peek_workloads()
                            if w.tenant == tenant
                            and w.app == record.app.name
                            and w.service == s.name
                            and w.node
                        }
                    )
                    uses.append(
                        secrets_pb2.SecretUse(app=record.app.name, service=s.name, nodes=nodes)
                    )
        return uses

    def _info(self, record: secrets_pb2.SecretRecord, *, uses: bool) -> secrets_pb2.SecretInfo:
        return secrets_pb2.SecretInfo(
            tenant=record.tenant,
            name=record.name,
            version=record.version,
            fingerprint=record.fingerprint,
            created_at=record.created_at,
            updated_at=record.updated_at,
            used_by=self._uses(record.tenant, record.name) if uses else [],
        )

    def _sealed(
        self, tenant: str, name: str, version: int, value: bytes, created: float
    ) -> secrets_pb2.SecretRecord:
        env = self._kek.seal(_check_value(value), label(tenant, name, version))
        return secrets_pb2.SecretRecord(
            tenant=tenant,
            name=name,
            version=version,
            created_at=created,
            updated_at=self._clock(),
            kek_id=env.kek_id,
            wrapped_dek=env.wrapped_dek,
            nonce=env.nonce,
            ciphertext=env.ciphertext,
            fingerprint=env.fingerprint,
        )

    # -- RPCs -------------------------------------------------------------------------

    @_errors
    async def CreateSecret(
        self, request: secrets_pb2.SecretWrite, context: Any, call: UserCall
    ) -> secrets_pb2.SecretInfo:
        name = _check_name(request.name)
        record = self._sealed(call.tenant, name, 1, request.value, self._clock())
        try:
            await self._state.store.put(
                keys.secret(call.tenant, name), record.SerializeToString(), expect_revision=0
            )
        except Conflict:
            raise SecretExists(f"secret {call.tenant}/{name} already exists") from None
        self._records[(call.tenant, name)] = record
        await self._audit.record(
            "secret.created", by=call.caller.uri, tenant=call.tenant, secret=name, version=1
        )
        return self._info(record, uses=False)

    @_errors
    async def RotateSecret(
        self, request: secrets_pb2.SecretWrite, context: Any, call: UserCall
    ) -> secrets_pb2.SecretInfo:
        name = _check_name(request.name)
        current, revision = await self._record_and_revision(call.tenant, name)
        record = self._sealed(
            call.tenant, name, current.version + 1, request.value, current.created_at
        )
        await self._state.store.put(
            keys.secret(call.tenant, name), record.SerializeToString(), expect_revision=revision
        )
        self._records[(call.tenant, name)] = record
        # Running instances get the new version now (files replaced in place).
        updated = await self._on_rotated(call.tenant, name) if self._on_rotated else 0
        await self._audit.record(
            "secret.rotated",
            by=call.caller.uri,
            tenant=call.tenant,
            secret=name,
            version=record.version,
            instances_updated=updated,
        )
        return self._info(record, uses=True)

    @_errors
    async def DeleteSecret(
        self, request: secrets_pb2.SecretRef, context: Any, call: UserCall
    ) -> secrets_pb2.SecretInfo:
        name = _check_name(request.name)
        record, revision = await self._record_and_revision(call.tenant, name)
        uses = self._uses(call.tenant, name)
        if uses:
            names = ", ".join(f"{u.app}/{u.service}" for u in uses)
            raise SecretInUse(f"secret {call.tenant}/{name} is used by {names}")
        await self._state.store.delete(keys.secret(call.tenant, name), expect_revision=revision)
        self._records.pop((call.tenant, name), None)
        for old in [k for k in self._seals if k[:2] == (call.tenant, name)]:
            del self._seals[old]
        await self._audit.record(
            "secret.deleted", by=call.caller.uri, tenant=call.tenant, secret=name
        )
        return self._info(record, uses=False)

    @_errors
    async def DescribeSecret(
        self, request: secrets_pb2.SecretRef, context: Any, call: UserCall
    ) -> secrets_pb2.SecretInfo:
        record, _ = await self._record_and_revision(call.tenant, _check_name(request.name))
        return self._info(record, uses=True)

    @_errors
    async def ListSecrets(
        self, request: secrets_pb2.SecretListRequest, context: Any, call: UserCall
    ) -> secrets_pb2.SecretList:
        prefix = keys.SECRETS + (f"{keys.part(request.tenant)}/" if request.tenant else "")
        out = secrets_pb2.SecretList()
        for entry in (await self._state.store.range(prefix)).entries:
            record = secrets_pb2.SecretRecord.FromString(entry.value)
            if may(call.caller, Access.READ, record.tenant):
                out.secrets.append(self._info(record, uses=False))
        return out

    # -- key-encryption key rotation ----------------------------------------------------

    async def rewrap_all(self) -> int:
        """Re-wrap every record's data key with the active KEK; returns how many moved."""
        moved = 0
        for entry in (await self._state.store.range(keys.SECRETS)).entries:
            record = secrets_pb2.SecretRecord.FromString(entry.value)
            if record.kek_id == self._kek.active_kid:
                continue
            env = self._kek.rewrap(
                _envelope(record), label(record.tenant, record.name, record.version)
            )
            record.kek_id, record.wrapped_dek = env.kek_id, env.wrapped_dek
            await self._state.store.put(
                entry.key, record.SerializeToString(), expect_revision=entry.revision
            )
            self._records[(record.tenant, record.name)] = record
            moved += 1
        return moved
