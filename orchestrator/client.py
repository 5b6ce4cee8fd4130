"""A synchronous ControlService client for the CLI, over mTLS with the user's certificate.

``grpc.RpcError`` becomes ``ControlError`` here and nowhere else; ``exit_code``
gives the CLI's exit status for any CapstanError (see docs/cli.md).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import grpc

from orchestrator.context import Context
from pki.errors import CapstanError
from protos import control_pb2 as cpb
from protos import control_pb2_grpc, topology_pb2
from protos.wire.channel import CONTROL_CHANNEL_OPTIONS, client_credentials
from protos.wire.errors import status_of

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
        if channel is None:
            ca, cert, key = context.read_credentials()
            channel = grpc.secure_channel(
                context.endpoint,
                client_credentials(cert, key, ca),
                options=CONTROL_CHANNEL_OPTIONS,
            )
        self.channel = channel
        self._stub: Any = control_pb2_grpc.ControlServiceStub(channel)

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> ControlClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, method: str, request: Any, timeout: float | None = None) -> Any:
        try:
            return getattr(self._stub, method)(request, timeout=timeout or self.timeout)
        except grpc.RpcError as exc:
            raise _mapped(method, exc, self.context) from None

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
    ) -> cpb.JoinTokenResponse:
        request = cpb.JoinTokenRequest(
            name=name, ttl=ttl, pool=pool, labels=dict(labels or {}), cpus=cpus, memory=memory
        )
        return self._call("CreateJoinToken", request)  # type: ignore[no-any-return]

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
        with NodeClient(grant.node_address, credentials=client_credentials(cert, key, ca)) as node:
            for chunk in node.stream("container.logs", request, grant.token):
                yield bytes(chunk.data)

    # -- audit --------------------------------------------------------------------------

    def audit_tail(
        self, *, since: int = 0, limit: int = 0, follow: bool = False
    ) -> Iterator[cpb.AuditEntry]:
        request = cpb.AuditRequest(since=since, limit=limit, follow=follow)
        try:
            yield from self._stub.AuditTail(request, timeout=None if follow else self.timeout)
        except grpc.RpcError as exc:
            raise _mapped("AuditTail", exc, self.context) from None

    def audit_verify(self) -> cpb.AuditVerifyResponse:
        return self._call("AuditVerify", cpb.AuditVerifyRequest())  # type: ignore[no-any-return]

    def who_can(self, node: str, *, since: float = 0.0, until: float = 0.0) -> cpb.WhoCanResponse:
        request = cpb.WhoCanRequest(node=node, since=since, until=until)
        return self._call("WhoCan", request)  # type: ignore[no-any-return]
