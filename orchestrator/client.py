"""A synchronous ControlService client for the CLI, over mTLS with the user's certificate.

``grpc.RpcError`` becomes ``ControlError`` here and nowhere else; ``exit_code``
gives the CLI's exit status for any CapstanError (see docs/cli.md).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from typing import Any

import grpc

from orchestrator.context import Context
from pki.certs import identity_of, load_pem_chain
from pki.errors import CapstanError
from protos import control_pb2 as cpb
from protos import control_pb2_grpc, secrets_pb2_grpc, topology_pb2
from protos import node_pb2 as npb
from protos import secrets_pb2 as spb
from protos.wire.channel import (
    CONTROL_CHANNEL_OPTIONS,
    any_orchestrator,
    client_credentials,
    expecting,
)
from protos.wire.errors import status_of
from protos.wire.leader import Endpoints, leader_of

__all__ = [
    "EXIT_FAILURE",
    "EXIT_NOT_FOUND",
    "EXIT_PERMISSION",
    "EXIT_UNAVAILABLE",
    "EXIT_USAGE",
    "ControlClient",
    "ControlError",
    "exit_code",
]

EXIT_FAILURE = 1
EXIT_USAGE = 2  # click's own for bad flags and arguments
EXIT_NOT_FOUND = 3
EXIT_PERMISSION = 4
EXIT_UNAVAILABLE = 5

_EXIT_BY_CODE = {
    "NOT_FOUND": EXIT_NOT_FOUND,
    "PERMISSION_DENIED": EXIT_PERMISSION,
    "UNAUTHENTICATED": EXIT_PERMISSION,
    "UNAVAILABLE": EXIT_UNAVAILABLE,
    "DEADLINE_EXCEEDED": EXIT_UNAVAILABLE,
}
DEFAULT_TIMEOUT = 30.0
# A leader change: the first call may meet a dead leader or a follower of a cluster
# still electing. Retried on the next (or named) orchestrator for this long at most;
# a refusal by a follower or a refused connection means nothing was done.
FAILOVER_WINDOW = 8.0
_FAILOVER_PAUSE = 0.25


class ControlError(CapstanError):
    """A ControlService call failed. ``code`` is the gRPC status name (``NOT_FOUND``...)."""

    def __init__(self, method: str, code: str, details: str) -> None:
        self.method = method
        self.code = code
        self.details = details
        super().__init__(
            f"{method}: {_describe(code)}: {details}" if details else f"{method}: {code}"
        )


def _describe(code: str) -> str:
    return code.lower().replace("_", " ")


def exit_code(exc: BaseException) -> int:
    """The process exit status for an error: 3 not found, 4 refused, 5 unreachable, else 1."""
    code = getattr(exc, "code", None)
    if isinstance(code, grpc.StatusCode):
        code = code.name
    if isinstance(code, str):
        return _EXIT_BY_CODE.get(code, EXIT_FAILURE)
    return EXIT_FAILURE


def _mapped(method: str, exc: grpc.RpcError, context: Context | None = None) -> ControlError:
    status = status_of(exc)
    if context is not None and status.name in ("UNAVAILABLE", "DEADLINE_EXCEEDED"):
        # gRPC's own text names neither the context nor what to do: say both.
        what = "cannot reach" if status.name == "UNAVAILABLE" else "no answer in time from"
        return ControlError(
            method,
            status.name,
            f"{what} the orchestrator of context {context.name!r} at {context.endpoint} "
            f"({_first_line(status.details)}); is it running? `capstan status` checks a local "
            "cluster (`capstan up` restarts it); `capstan context list` shows the others",
        )
    return ControlError(method, status.name, status.details)


def _first_line(text: str | None) -> str:
    line = " ".join((text or "").split())
    return line if len(line) <= 120 else line[:117] + "..."


class ControlClient:
    """One channel to the orchestrator of ``context``; a method per ControlService RPC."""

    def __init__(
        self,
        context: Context,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        channel: grpc.Channel | None = None,
    ) -> None:
        self.context = context
        self.timeout = timeout
        self.endpoints = Endpoints(context.endpoints or [context.endpoint])
        self._credentials: grpc.ChannelCredentials | None = None
        self._options: list[tuple[str, Any]] = []
        if channel is None:
            ca, cert, key = context.read_credentials()
            # The server must prove it is an orchestrator of our trust domain in the
            # handshake, whatever host name the context dials.
            trust_domain = identity_of(load_pem_chain(cert, "user certificate")[0]).trust_domain
            self._credentials = client_credentials(cert, key, ca)
            self._options = [*CONTROL_CHANNEL_OPTIONS, *expecting(any_orchestrator(trust_domain))]
            channel = self._dial(self.endpoints.current())
        self.channel = channel
        self._stub: Any = control_pb2_grpc.ControlServiceStub(channel)
        self._secrets: Any = secrets_pb2_grpc.SecretServiceStub(channel)

    def _dial(self, endpoint: str) -> grpc.Channel:
        assert self._credentials is not None  # noqa: S101 - only for contexts we dialled
        return grpc.secure_channel(endpoint, self._credentials, options=self._options)

    def _failover(self, exc: grpc.RpcError, started: float) -> bool:
        """After UNAVAILABLE: move to the leader a follower named, or to the next
        orchestrator; False when there is nowhere else to go or no time left."""
        if self._credentials is None or status_of(exc).name != "UNAVAILABLE":
            return False
        if time.monotonic() - started > FAILOVER_WINDOW:
            return False
        failed = self.endpoints.current()
        leader = leader_of(exc)
        if not leader and len(self.endpoints) == 1:
            return False
        target = self.endpoints.failed(failed, leader)
        if target == failed:
            time.sleep(_FAILOVER_PAUSE)  # the same one: a cluster still electing
        else:
            self.channel.close()
            self.channel = self._dial(target)
            self._stub = control_pb2_grpc.ControlServiceStub(self.channel)
            self._secrets = secrets_pb2_grpc.SecretServiceStub(self.channel)
        if not leader:
            time.sleep(_FAILOVER_PAUSE)
        return True

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> ControlClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(
        self, method: str, request: Any, timeout: float | None = None, *, service: str = "_stub"
    ) -> Any:
        started = time.monotonic()
        while True:
            try:
                stub = getattr(self, service)  # read each try: a failover replaces it
                return getattr(stub, method)(request, timeout=timeout or self.timeout)
            except grpc.RpcError as exc:
                if self._failover(exc, started):
                    continue
                raise _mapped(method, exc, self.context) from None

    # -- secrets (values go in, never come out) ----------------------------------------

    def create_secret(self, name: str, value: bytes, tenant: str = "") -> spb.SecretInfo:
        request = spb.SecretWrite(tenant=tenant, name=name, value=value)
        return self._call("CreateSecret", request, service="_secrets")  # type: ignore[no-any-return]

    def rotate_secret(self, name: str, value: bytes, tenant: str = "") -> spb.SecretInfo:
        request = spb.SecretWrite(tenant=tenant, name=name, value=value)
        return self._call("RotateSecret", request, service="_secrets")  # type: ignore[no-any-return]

    def delete_secret(self, name: str, tenant: str = "") -> spb.SecretInfo:
        request = spb.SecretRef(tenant=tenant, name=name)
        return self._call("DeleteSecret", request, service="_secrets")  # type: ignore[no-any-return]

    def describe_secret(self, name: str, tenant: str = "") -> spb.SecretInfo:
        request = spb.SecretRef(tenant=tenant, name=name)
        return self._call("DescribeSecret", request, service="_secrets")  # type: ignore[no-any-return]

    def list_secrets(self, tenant: str = "") -> list[spb.SecretInfo]:
        reply = self._call("ListSecrets", spb.SecretListRequest(tenant=tenant), service="_secrets")
        return list(reply.secrets)

    # -- applications -----------------------------------------------------------------

    def apply(self, app: topology_pb2.Application, *, dry_run: bool = False) -> cpb.ApplyResponse:
        return self._call("Apply", cpb.ApplyRequest(app=app, dry_run=dry_run))  # type: ignore[no-any-return]

    def delete_app(self, name: str, tenant: str = "") -> cpb.ApplyResponse:
        return self._call("DeleteApp", cpb.AppRef(tenant=tenant, name=name))  # type: ignore[no-any-return]

    def get_app(self, name: str, tenant: str = "") -> cpb.AppDetail:
        return self._call("GetApp", cpb.AppRef(tenant=tenant, name=name))  # type: ignore[no-any-return]

    def list_apps(self, tenant: str = "") -> list[cpb.AppSummary]:
        return list(self._call("ListApps", cpb.ListAppsRequest(tenant=tenant)).apps)

    def list_workloads(self, tenant: str = "", app: str = "", node: str = "") -> list[cpb.Workload]:
        reply = self._call("ListWorkloads", cpb.WorkloadFilter(tenant=tenant, app=app, node=node))
        return list(reply.workloads)

    # -- nodes ------------------------------------------------------------------------

    def list_nodes(self) -> list[cpb.NodeRecord]:
        return list(self._call("ListNodes", cpb.ListNodesRequest()).nodes)

    def seed_image(self, node: str, image: str) -> cpb.SeedImageResponse:
        request = cpb.SeedImageRequest(node=node, image=image)
        return self._call("SeedImage", request)  # type: ignore[no-any-return]

    def cordon(self, name: str) -> cpb.NodeRecord:
        return self._call("Cordon", cpb.NodeRef(name=name))  # type: ignore[no-any-return]

    def uncordon(self, name: str) -> cpb.NodeRecord:
        return self._call("Uncordon", cpb.NodeRef(name=name))  # type: ignore[no-any-return]

    def drain(self, name: str) -> cpb.NodeRecord:
        return self._call("Drain", cpb.NodeRef(name=name))  # type: ignore[no-any-return]

    def revoke_node(self, name: str, reason: str = "") -> cpb.NodeRecord:
        return self._call("RevokeNode", cpb.RevokeNodeRequest(name=name, reason=reason))  # type: ignore[no-any-return]

    def pki_status(self) -> cpb.PkiStatusResponse:
        return self._call("PkiStatus", cpb.PkiStatusRequest())  # type: ignore[no-any-return]

    def version(self) -> cpb.VersionInfo:
        return self._call("Version", cpb.VersionRequest())  # type: ignore[no-any-return]

    def rebalance(self, *, dry_run: bool = False) -> cpb.RebalancePlan:
        return self._call("Rebalance", cpb.RebalanceRequest(dry_run=dry_run))  # type: ignore[no-any-return]

    def create_join_token(
        self,
        *,
        name: str = "",
        ttl: float = 0.0,
        pool: str = "",
        labels: Mapping[str, str] | None = None,
        cpus: float = 0.0,
        memory: int = 0,
        policy: npb.SandboxPolicy | None = None,
    ) -> cpb.JoinTokenResponse:
        request = cpb.JoinTokenRequest(
            name=name, ttl=ttl, pool=pool, labels=dict(labels or {}), cpus=cpus, memory=memory
        )
        if policy is not None:
            request.policy.CopyFrom(policy)
        return self._call("CreateJoinToken", request)  # type: ignore[no-any-return]

    # -- sandbox policies and quotas --------------------------------------------------

    def set_pool_policy(self, pool: str, policy: npb.SandboxPolicy) -> cpb.PoolPolicyRecord:
        request = cpb.PoolPolicyRecord(pool=pool)
        request.policy.CopyFrom(policy)
        return self._call("SetPoolPolicy", request)  # type: ignore[no-any-return]

    def list_pool_policies(self) -> list[cpb.PoolPolicyRecord]:
        return list(self._call("ListPoolPolicies", cpb.ListPoolPoliciesRequest()).pools)

    def set_quota(self, tenant: str, *, cpu: float, memory: int, instances: int) -> cpb.Quota:
        request = cpb.Quota(tenant=tenant, cpu=cpu, memory=memory, instances=instances)
        return self._call("SetQuota", request)  # type: ignore[no-any-return]

    def describe_tenant(self, tenant: str) -> cpb.TenantUsage:
        return self._call("DescribeTenant", cpb.TenantRef(tenant=tenant))  # type: ignore[no-any-return]

    # -- logs -------------------------------------------------------------------------

    def logs_grant(
        self, app: str, instance: str, *, tenant: str = "", follow: bool = False, tail: int = 0
    ) -> cpb.LogsGrant:
        request = cpb.AppLogsRequest(
            tenant=tenant, app=app, instance=instance, follow=follow, tail=tail
        )
        return self._call("Logs", request)  # type: ignore[no-any-return]

    def stream_logs(self, grant: cpb.LogsGrant, *, follow: bool, tail: int) -> Iterator[bytes]:
        """Read the container's logs from its node directly, with the user's own
        certificate and the grant's single-use token (the orchestrator relays nothing)."""
        from protos import node_pb2
        from protos.wire.channel import client_credentials
        from protos.wire.nodeclient import NodeClient

        ca, cert, key = self.context.read_credentials()
        request = node_pb2.LogsRequest(name=grant.container, follow=follow, tail=tail)
        with NodeClient(
            grant.node_address, credentials=client_credentials(cert, key, ca), expect=grant.node_id
        ) as node:
            for chunk in node.stream("container.logs", request, grant.token):
                yield bytes(chunk.data)

    def follow_logs(
        self, app: str, instance: str, *, tenant: str = "", tail: int = 0
    ) -> Iterator[bytes]:
        """``logs -f``: a follow stream ends with its grant (protos.wire.grants), so on
        "grant expired" a new grant is asked for (the caller is authorized again) and
        the output resumes where it stopped."""
        from protos.wire.errors import NodeCallError

        printed = 0  # bytes yielded; exact offset when the first read had no tail
        recent = b""  # the last bytes yielded, to find the resume point otherwise
        first = True
        while True:
            grant = self.logs_grant(
                app, instance, tenant=tenant, follow=True, tail=tail if first else 0
            )
            chunks = self.stream_logs(grant, follow=True, tail=tail if first else 0)
            if not first:
                chunks = _resumed(chunks, skip=printed if tail == 0 else None, recent=recent)
            try:
                for data in chunks:
                    printed += len(data)
                    recent = (recent + data)[-_RESUME_WINDOW:]
                    yield data
                return  # the container ended: so does the output
            except NodeCallError as exc:
                if exc.code != grpc.StatusCode.UNAUTHENTICATED or exc.details != "grant expired":
                    raise
            first = False

    # -- exec ---------------------------------------------------------------------------

    def exec_grant(
        self,
        app: str,
        instance: str,
        command: list[str],
        *,
        tenant: str = "",
        tty: bool = False,
        stdin: bool = False,
        ttl: float = 0.0,
    ) -> cpb.ExecGrant:
        request = cpb.ExecRequest(
            tenant=tenant,
            app=app,
            instance=instance,
            command=command,
            tty=tty,
            stdin=stdin,
            ttl=ttl,
        )
        return self._call("Exec", request)  # type: ignore[no-any-return]

    def exec_session(
        self,
        grant: cpb.ExecGrant,
        command: list[str],
        inputs: Iterator[bytes],
        *,
        tty: bool = False,
        stdin: bool = False,
    ) -> Iterator[Any]:
        """Run the granted command on its node directly, with the user's own certificate:
        ExecOutput messages until the command exits or the grant ends. ``inputs`` is
        the user's input (read only with ``stdin``); its end closes the command's stdin."""
        from protos import node_pb2
        from protos.wire.channel import client_credentials
        from protos.wire.nodeclient import NodeClient

        # Exactly the start the orchestrator minted the token for (its digest is req).
        start = node_pb2.ExecStart(name=grant.container, command=command, tty=tty, stdin=stdin)

        def messages() -> Iterator[Any]:
            yield node_pb2.ExecInput(start=start)
            if not stdin:
                return
            for data in inputs:
                yield node_pb2.ExecInput(stdin=data)
            yield node_pb2.ExecInput(close_stdin=True)

        ca, cert, key = self.context.read_credentials()
        # The node must prove the identity the token is for (not only its host name).
        with NodeClient(
            grant.node_address, credentials=client_credentials(cert, key, ca), expect=grant.node_id
        ) as target:
            yield from target.stream("container.exec", messages(), grant.token)

    # -- audit --------------------------------------------------------------------------

    def audit_tail(
        self, *, since: int = 0, limit: int = 0, follow: bool = False
    ) -> Iterator[cpb.AuditEntry]:
        request = cpb.AuditRequest(since=since, limit=limit, follow=follow)
        try:
            yield from self._stub.AuditTail(request, timeout=None if follow else self.timeout)
        except grpc.RpcError as exc:
            raise _mapped("AuditTail", exc, self.context) from None

    def list_orchestrators(self) -> cpb.OrchestratorsInfo:
        """The control plane: leader, epoch, every orchestrator, etcd members' health."""
        return self._call("ListOrchestrators", cpb.OrchestratorsRequest())  # type: ignore[no-any-return]

    def audit_verify(self) -> cpb.AuditVerifyResponse:
        return self._call("AuditVerify", cpb.AuditVerifyRequest())  # type: ignore[no-any-return]

    def who_can(self, node: str, *, since: float = 0.0, until: float = 0.0) -> cpb.WhoCanResponse:
        request = cpb.WhoCanRequest(node=node, since=since, until=until)
        return self._call("WhoCan", request)  # type: ignore[no-any-return]


_RESUME_WINDOW = 4096


def _resumed(chunks: Iterator[bytes], *, skip: int | None, recent: bytes) -> Iterator[bytes]:
    """The part of a re-read log after what was already printed: the first ``skip``
    bytes when the offset is known, else what follows the last ``recent`` bytes (the
    first read was a tail, so its offset in the whole log is not known)."""
    if skip is not None:
        for data in chunks:
            if skip >= len(data):
                skip -= len(data)
                continue
            yield data[skip:]
            skip = 0
        return
    buffered = b""
    found = not recent
    for data in chunks:
        if found:
            yield data
            continue
        buffered += data
        at = buffered.rfind(recent)
        if at >= 0:
            found = True
            rest = buffered[at + len(recent) :]
            if rest:
                yield rest
        else:
            buffered = buffered[-(len(recent) - 1) :] if len(recent) > 1 else b""
