"""The operation table of NodeService: which token ``op`` each RPC needs, and how the
token's ``res`` and ``req`` are derived from the request.

Both sides use this one table: the orchestrator to mint a token for a call, the node
to check the token against the call. A new RPC without an entry here is refused by
the node's interceptor (fail closed).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import Message

SERVICE = "capstan.v1.NodeService"

#: ``res`` of operations that address the whole node rather than one object.
NODE_RESOURCE = "*"


def request_fields(message: Message) -> Mapping[str, Any]:
    """The canonical fields of a request whose parameters matter (hashed into ``req``)."""
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


@dataclass(frozen=True)
class Operation:
    op: str
    method: str  # RPC method name in NodeService
    resource: Callable[[Any], str]  # request (or first stream message) -> res
    binds_request: bool = False  # True: the token's req must be the digest of request_fields()
    client_stream: bool = False


def _name(msg: Any) -> str:
    return str(msg.name)


def _ref(msg: Any) -> str:
    return str(msg.ref)


def _res(msg: Any) -> str:
    return str(msg.res)


def _exec_name(msg: Any) -> str:
    return str(msg.start.name)


def _node(_msg: Any) -> str:
    return NODE_RESOURCE


OPERATIONS: tuple[Operation, ...] = (
    Operation("container.create", "CreateContainer", _name, binds_request=True),
    Operation("container.start", "StartContainer", _name),
    Operation("container.stop", "StopContainer", _name),
    Operation("container.restart", "RestartContainer", _name),
    Operation("container.remove", "RemoveContainer", _name, binds_request=True),
    Operation("container.inspect", "InspectContainer", _name),
    Operation("container.list", "ListContainers", _node),
    Operation("container.logs", "ContainerLogs", _name),
    Operation("container.stats", "GetContainerStats", _name),
    Operation("image.export", "ExportImage", _ref),
    Operation("image.import", "ImportImage", _ref, client_stream=True),
    Operation("volume.export", "ExportVolume", _name),
    Operation("volume.import", "ImportVolume", _name, client_stream=True),
    Operation("node.info", "GetNodeInfo", _node),
    # A tunnel of a delegated link (node/links): res is tenant/app/service:port.
    Operation("link.open", "Tunnel", _res, client_stream=True),
    # New versions of a running instance's secrets, sealed to this node (node/secretfiles).
    Operation("secret.update", "UpdateSecrets", _name, binds_request=True),
    # A user's command in a container: req binds the command line of the first message.
    Operation("container.exec", "ExecContainer", _exec_name, binds_request=True,
              client_stream=True),
)

BY_METHOD: Mapping[str, Operation] = {f"/{SERVICE}/{o.method}": o for o in OPERATIONS}
BY_OP: Mapping[str, Operation] = {o.op: o for o in OPERATIONS}
