from protos import node_pb2 as _node_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class JoinRequest(_message.Message):
    __slots__ = ("join_token", "csr_pem", "name", "dns", "ips", "address", "cpus", "memory", "labels", "runtime", "mode", "seal_key", "isolation")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    JOIN_TOKEN_FIELD_NUMBER: _ClassVar[int]
    CSR_PEM_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    DNS_FIELD_NUMBER: _ClassVar[int]
    IPS_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    CPUS_FIELD_NUMBER: _ClassVar[int]
    MEMORY_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    RUNTIME_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    SEAL_KEY_FIELD_NUMBER: _ClassVar[int]
    ISOLATION_FIELD_NUMBER: _ClassVar[int]
    join_token: str
    csr_pem: bytes
    name: str
    dns: _containers.RepeatedScalarFieldContainer[str]
    ips: _containers.RepeatedScalarFieldContainer[str]
    address: str
    cpus: float
    memory: int
    labels: _containers.ScalarMap[str, str]
    runtime: str
    mode: str
    seal_key: bytes
    isolation: str
    def __init__(self, join_token: _Optional[str] = ..., csr_pem: _Optional[bytes] = ..., name: _Optional[str] = ..., dns: _Optional[_Iterable[str]] = ..., ips: _Optional[_Iterable[str]] = ..., address: _Optional[str] = ..., cpus: _Optional[float] = ..., memory: _Optional[int] = ..., labels: _Optional[_Mapping[str, str]] = ..., runtime: _Optional[str] = ..., mode: _Optional[str] = ..., seal_key: _Optional[bytes] = ..., isolation: _Optional[str] = ...) -> None: ...

class JoinResponse(_message.Message):
    __slots__ = ("node_id", "name", "certificate_chain", "trust_bundle", "jwks", "issuers", "deny_list", "heartbeat_interval", "gateway_address", "gateway_addresses", "policy")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    CERTIFICATE_CHAIN_FIELD_NUMBER: _ClassVar[int]
    TRUST_BUNDLE_FIELD_NUMBER: _ClassVar[int]
    JWKS_FIELD_NUMBER: _ClassVar[int]
    ISSUERS_FIELD_NUMBER: _ClassVar[int]
    DENY_LIST_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_INTERVAL_FIELD_NUMBER: _ClassVar[int]
    GATEWAY_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    GATEWAY_ADDRESSES_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    name: str
    certificate_chain: bytes
    trust_bundle: bytes
    jwks: bytes
    issuers: _containers.RepeatedScalarFieldContainer[str]
    deny_list: bytes
    heartbeat_interval: float
    gateway_address: str
    gateway_addresses: _containers.RepeatedScalarFieldContainer[str]
    policy: _node_pb2.SandboxPolicy
    def __init__(self, node_id: _Optional[str] = ..., name: _Optional[str] = ..., certificate_chain: _Optional[bytes] = ..., trust_bundle: _Optional[bytes] = ..., jwks: _Optional[bytes] = ..., issuers: _Optional[_Iterable[str]] = ..., deny_list: _Optional[bytes] = ..., heartbeat_interval: _Optional[float] = ..., gateway_address: _Optional[str] = ..., gateway_addresses: _Optional[_Iterable[str]] = ..., policy: _Optional[_Union[_node_pb2.SandboxPolicy, _Mapping]] = ...) -> None: ...

class ContainerUsage(_message.Message):
    __slots__ = ("name", "cpu_fraction", "memory_bytes")
    NAME_FIELD_NUMBER: _ClassVar[int]
    CPU_FRACTION_FIELD_NUMBER: _ClassVar[int]
    MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    name: str
    cpu_fraction: float
    memory_bytes: int
    def __init__(self, name: _Optional[str] = ..., cpu_fraction: _Optional[float] = ..., memory_bytes: _Optional[int] = ...) -> None: ...

class NodeStatus(_message.Message):
    __slots__ = ("sent_at", "containers", "usage", "full", "images", "trust_digest", "image_digests")
    SENT_AT_FIELD_NUMBER: _ClassVar[int]
    CONTAINERS_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    FULL_FIELD_NUMBER: _ClassVar[int]
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    TRUST_DIGEST_FIELD_NUMBER: _ClassVar[int]
    IMAGE_DIGESTS_FIELD_NUMBER: _ClassVar[int]
    sent_at: float
    containers: _containers.RepeatedCompositeFieldContainer[_node_pb2.ContainerStatus]
    usage: _containers.RepeatedCompositeFieldContainer[ContainerUsage]
    full: bool
    images: _containers.RepeatedScalarFieldContainer[str]
    trust_digest: str
    image_digests: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, sent_at: _Optional[float] = ..., containers: _Optional[_Iterable[_Union[_node_pb2.ContainerStatus, _Mapping]]] = ..., usage: _Optional[_Iterable[_Union[ContainerUsage, _Mapping]]] = ..., full: _Optional[bool] = ..., images: _Optional[_Iterable[str]] = ..., trust_digest: _Optional[str] = ..., image_digests: _Optional[_Iterable[str]] = ...) -> None: ...

class TrustUpdate(_message.Message):
    __slots__ = ("jwks", "deny_list", "trust_bundle", "epoch", "issued_at_ms", "signatures")
    JWKS_FIELD_NUMBER: _ClassVar[int]
    DENY_LIST_FIELD_NUMBER: _ClassVar[int]
    TRUST_BUNDLE_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    ISSUED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    SIGNATURES_FIELD_NUMBER: _ClassVar[int]
    jwks: bytes
    deny_list: bytes
    trust_bundle: bytes
    epoch: int
    issued_at_ms: int
    signatures: _containers.RepeatedCompositeFieldContainer[TrustSignature]
    def __init__(self, jwks: _Optional[bytes] = ..., deny_list: _Optional[bytes] = ..., trust_bundle: _Optional[bytes] = ..., epoch: _Optional[int] = ..., issued_at_ms: _Optional[int] = ..., signatures: _Optional[_Iterable[_Union[TrustSignature, _Mapping]]] = ...) -> None: ...

class TrustSignature(_message.Message):
    __slots__ = ("kid", "signature")
    KID_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    kid: str
    signature: bytes
    def __init__(self, kid: _Optional[str] = ..., signature: _Optional[bytes] = ...) -> None: ...

class Task(_message.Message):
    __slots__ = ("request_id", "kind", "resource", "source_address", "source_id", "token", "expires_at")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_FIELD_NUMBER: _ClassVar[int]
    SOURCE_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    SOURCE_ID_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    kind: str
    resource: str
    source_address: str
    source_id: str
    token: str
    expires_at: float
    def __init__(self, request_id: _Optional[str] = ..., kind: _Optional[str] = ..., resource: _Optional[str] = ..., source_address: _Optional[str] = ..., source_id: _Optional[str] = ..., token: _Optional[str] = ..., expires_at: _Optional[float] = ...) -> None: ...

class LinkEndpoint(_message.Message):
    __slots__ = ("node_id", "address", "token", "token_expires_at")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    TOKEN_EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    address: str
    token: str
    token_expires_at: float
    def __init__(self, node_id: _Optional[str] = ..., address: _Optional[str] = ..., token: _Optional[str] = ..., token_expires_at: _Optional[float] = ...) -> None: ...

class LinkRoute(_message.Message):
    __slots__ = ("res", "endpoints")
    RES_FIELD_NUMBER: _ClassVar[int]
    ENDPOINTS_FIELD_NUMBER: _ClassVar[int]
    res: str
    endpoints: _containers.RepeatedCompositeFieldContainer[LinkEndpoint]
    def __init__(self, res: _Optional[str] = ..., endpoints: _Optional[_Iterable[_Union[LinkEndpoint, _Mapping]]] = ...) -> None: ...

class LinkGrant(_message.Message):
    __slots__ = ("source_id", "res")
    SOURCE_ID_FIELD_NUMBER: _ClassVar[int]
    RES_FIELD_NUMBER: _ClassVar[int]
    source_id: str
    res: str
    def __init__(self, source_id: _Optional[str] = ..., res: _Optional[str] = ...) -> None: ...

class LinkPlan(_message.Message):
    __slots__ = ("routes", "grants", "valid_until")
    ROUTES_FIELD_NUMBER: _ClassVar[int]
    GRANTS_FIELD_NUMBER: _ClassVar[int]
    VALID_UNTIL_FIELD_NUMBER: _ClassVar[int]
    routes: _containers.RepeatedCompositeFieldContainer[LinkRoute]
    grants: _containers.RepeatedCompositeFieldContainer[LinkGrant]
    valid_until: float
    def __init__(self, routes: _Optional[_Iterable[_Union[LinkRoute, _Mapping]]] = ..., grants: _Optional[_Iterable[_Union[LinkGrant, _Mapping]]] = ..., valid_until: _Optional[float] = ...) -> None: ...

class GatewayMessage(_message.Message):
    __slots__ = ("sent_at", "trust", "fence", "tasks", "renew_now", "links")
    SENT_AT_FIELD_NUMBER: _ClassVar[int]
    TRUST_FIELD_NUMBER: _ClassVar[int]
    FENCE_FIELD_NUMBER: _ClassVar[int]
    TASKS_FIELD_NUMBER: _ClassVar[int]
    RENEW_NOW_FIELD_NUMBER: _ClassVar[int]
    LINKS_FIELD_NUMBER: _ClassVar[int]
    sent_at: float
    trust: TrustUpdate
    fence: _containers.RepeatedScalarFieldContainer[str]
    tasks: _containers.RepeatedCompositeFieldContainer[Task]
    renew_now: bool
    links: LinkPlan
    def __init__(self, sent_at: _Optional[float] = ..., trust: _Optional[_Union[TrustUpdate, _Mapping]] = ..., fence: _Optional[_Iterable[str]] = ..., tasks: _Optional[_Iterable[_Union[Task, _Mapping]]] = ..., renew_now: _Optional[bool] = ..., links: _Optional[_Union[LinkPlan, _Mapping]] = ...) -> None: ...

class TaskResult(_message.Message):
    __slots__ = ("request_id", "ok", "message")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    OK_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    ok: bool
    message: str
    def __init__(self, request_id: _Optional[str] = ..., ok: _Optional[bool] = ..., message: _Optional[str] = ...) -> None: ...

class TaskAck(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class RenewRequest(_message.Message):
    __slots__ = ("csr_pem",)
    CSR_PEM_FIELD_NUMBER: _ClassVar[int]
    csr_pem: bytes
    def __init__(self, csr_pem: _Optional[bytes] = ...) -> None: ...

class RenewResponse(_message.Message):
    __slots__ = ("certificate_chain", "trust_bundle", "not_after")
    CERTIFICATE_CHAIN_FIELD_NUMBER: _ClassVar[int]
    TRUST_BUNDLE_FIELD_NUMBER: _ClassVar[int]
    NOT_AFTER_FIELD_NUMBER: _ClassVar[int]
    certificate_chain: bytes
    trust_bundle: bytes
    not_after: float
    def __init__(self, certificate_chain: _Optional[bytes] = ..., trust_bundle: _Optional[bytes] = ..., not_after: _Optional[float] = ...) -> None: ...

class WatchRequest(_message.Message):
    __slots__ = ("node",)
    NODE_FIELD_NUMBER: _ClassVar[int]
    node: str
    def __init__(self, node: _Optional[str] = ...) -> None: ...

class Assignment(_message.Message):
    __slots__ = ("workload_id", "spec", "desired", "restart")
    WORKLOAD_ID_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    DESIRED_FIELD_NUMBER: _ClassVar[int]
    RESTART_FIELD_NUMBER: _ClassVar[int]
    workload_id: str
    spec: _node_pb2.ContainerSpec
    desired: str
    restart: str
    def __init__(self, workload_id: _Optional[str] = ..., spec: _Optional[_Union[_node_pb2.ContainerSpec, _Mapping]] = ..., desired: _Optional[str] = ..., restart: _Optional[str] = ...) -> None: ...

class Assignments(_message.Message):
    __slots__ = ("assignments", "revision", "epoch")
    ASSIGNMENTS_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    assignments: _containers.RepeatedCompositeFieldContainer[Assignment]
    revision: int
    epoch: int
    def __init__(self, assignments: _Optional[_Iterable[_Union[Assignment, _Mapping]]] = ..., revision: _Optional[int] = ..., epoch: _Optional[int] = ...) -> None: ...
