from protos import node_pb2 as _node_pb2
from protos import topology_pb2 as _topology_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ApplyRequest(_message.Message):
    __slots__ = ("app", "dry_run")
    APP_FIELD_NUMBER: _ClassVar[int]
    DRY_RUN_FIELD_NUMBER: _ClassVar[int]
    app: _topology_pb2.Application
    dry_run: bool
    def __init__(self, app: _Optional[_Union[_topology_pb2.Application, _Mapping]] = ..., dry_run: _Optional[bool] = ...) -> None: ...

class ServiceChange(_message.Message):
    __slots__ = ("service", "action", "replicas", "spec_hash")
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    SPEC_HASH_FIELD_NUMBER: _ClassVar[int]
    service: str
    action: str
    replicas: int
    spec_hash: str
    def __init__(self, service: _Optional[str] = ..., action: _Optional[str] = ..., replicas: _Optional[int] = ..., spec_hash: _Optional[str] = ...) -> None: ...

class ApplyResponse(_message.Message):
    __slots__ = ("tenant", "app", "generation", "changes")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    APP_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    CHANGES_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    app: str
    generation: int
    changes: _containers.RepeatedCompositeFieldContainer[ServiceChange]
    def __init__(self, tenant: _Optional[str] = ..., app: _Optional[str] = ..., generation: _Optional[int] = ..., changes: _Optional[_Iterable[_Union[ServiceChange, _Mapping]]] = ...) -> None: ...

class AppRef(_message.Message):
    __slots__ = ("tenant", "name")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    name: str
    def __init__(self, tenant: _Optional[str] = ..., name: _Optional[str] = ...) -> None: ...

class AppRecord(_message.Message):
    __slots__ = ("app", "generation", "created_at", "updated_at", "spec_hashes", "deleting", "autoscaled")
    class SpecHashesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class AutoscaledEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    APP_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    SPEC_HASHES_FIELD_NUMBER: _ClassVar[int]
    DELETING_FIELD_NUMBER: _ClassVar[int]
    AUTOSCALED_FIELD_NUMBER: _ClassVar[int]
    app: _topology_pb2.Application
    generation: int
    created_at: float
    updated_at: float
    spec_hashes: _containers.ScalarMap[str, str]
    deleting: bool
    autoscaled: _containers.ScalarMap[str, int]
    def __init__(self, app: _Optional[_Union[_topology_pb2.Application, _Mapping]] = ..., generation: _Optional[int] = ..., created_at: _Optional[float] = ..., updated_at: _Optional[float] = ..., spec_hashes: _Optional[_Mapping[str, str]] = ..., deleting: _Optional[bool] = ..., autoscaled: _Optional[_Mapping[str, int]] = ...) -> None: ...

class AppSummary(_message.Message):
    __slots__ = ("tenant", "name", "generation", "services", "desired", "running", "updated_at")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    SERVICES_FIELD_NUMBER: _ClassVar[int]
    DESIRED_FIELD_NUMBER: _ClassVar[int]
    RUNNING_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    name: str
    generation: int
    services: int
    desired: int
    running: int
    updated_at: float
    def __init__(self, tenant: _Optional[str] = ..., name: _Optional[str] = ..., generation: _Optional[int] = ..., services: _Optional[int] = ..., desired: _Optional[int] = ..., running: _Optional[int] = ..., updated_at: _Optional[float] = ...) -> None: ...

class ListAppsRequest(_message.Message):
    __slots__ = ("tenant",)
    TENANT_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    def __init__(self, tenant: _Optional[str] = ...) -> None: ...

class AppList(_message.Message):
    __slots__ = ("apps",)
    APPS_FIELD_NUMBER: _ClassVar[int]
    apps: _containers.RepeatedCompositeFieldContainer[AppSummary]
    def __init__(self, apps: _Optional[_Iterable[_Union[AppSummary, _Mapping]]] = ...) -> None: ...

class Workload(_message.Message):
    __slots__ = ("id", "tenant", "app", "service", "index", "node", "container", "desired", "state", "restarts", "image", "spec_hash", "updated_at", "message", "generation", "exit_code", "cpu", "memory", "request_id", "next_attempt_at", "attempts", "previous_nodes", "created_at", "cpu_used", "memory_used", "endpoints")
    ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    APP_FIELD_NUMBER: _ClassVar[int]
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    CONTAINER_FIELD_NUMBER: _ClassVar[int]
    DESIRED_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    RESTARTS_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    SPEC_HASH_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    EXIT_CODE_FIELD_NUMBER: _ClassVar[int]
    CPU_FIELD_NUMBER: _ClassVar[int]
    MEMORY_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    NEXT_ATTEMPT_AT_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_NODES_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    CPU_USED_FIELD_NUMBER: _ClassVar[int]
    MEMORY_USED_FIELD_NUMBER: _ClassVar[int]
    ENDPOINTS_FIELD_NUMBER: _ClassVar[int]
    id: str
    tenant: str
    app: str
    service: str
    index: int
    node: str
    container: str
    desired: str
    state: str
    restarts: int
    image: str
    spec_hash: str
    updated_at: float
    message: str
    generation: int
    exit_code: int
    cpu: float
    memory: int
    request_id: str
    next_attempt_at: float
    attempts: int
    previous_nodes: _containers.RepeatedScalarFieldContainer[str]
    created_at: float
    cpu_used: float
    memory_used: int
    endpoints: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, id: _Optional[str] = ..., tenant: _Optional[str] = ..., app: _Optional[str] = ..., service: _Optional[str] = ..., index: _Optional[int] = ..., node: _Optional[str] = ..., container: _Optional[str] = ..., desired: _Optional[str] = ..., state: _Optional[str] = ..., restarts: _Optional[int] = ..., image: _Optional[str] = ..., spec_hash: _Optional[str] = ..., updated_at: _Optional[float] = ..., message: _Optional[str] = ..., generation: _Optional[int] = ..., exit_code: _Optional[int] = ..., cpu: _Optional[float] = ..., memory: _Optional[int] = ..., request_id: _Optional[str] = ..., next_attempt_at: _Optional[float] = ..., attempts: _Optional[int] = ..., previous_nodes: _Optional[_Iterable[str]] = ..., created_at: _Optional[float] = ..., cpu_used: _Optional[float] = ..., memory_used: _Optional[int] = ..., endpoints: _Optional[_Iterable[str]] = ...) -> None: ...

class AppDetail(_message.Message):
    __slots__ = ("record", "summary", "workloads", "events")
    RECORD_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    WORKLOADS_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    record: AppRecord
    summary: AppSummary
    workloads: _containers.RepeatedCompositeFieldContainer[Workload]
    events: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, record: _Optional[_Union[AppRecord, _Mapping]] = ..., summary: _Optional[_Union[AppSummary, _Mapping]] = ..., workloads: _Optional[_Iterable[_Union[Workload, _Mapping]]] = ..., events: _Optional[_Iterable[str]] = ...) -> None: ...

class WorkloadFilter(_message.Message):
    __slots__ = ("tenant", "app", "node")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    APP_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    app: str
    node: str
    def __init__(self, tenant: _Optional[str] = ..., app: _Optional[str] = ..., node: _Optional[str] = ...) -> None: ...

class WorkloadList(_message.Message):
    __slots__ = ("workloads",)
    WORKLOADS_FIELD_NUMBER: _ClassVar[int]
    workloads: _containers.RepeatedCompositeFieldContainer[Workload]
    def __init__(self, workloads: _Optional[_Iterable[_Union[Workload, _Mapping]]] = ...) -> None: ...

class NodeRecord(_message.Message):
    __slots__ = ("name", "id", "address", "cpus", "memory", "allocated_cpu", "allocated_memory", "last_heartbeat", "cert_expiry", "state", "cordoned", "draining", "labels", "runtime", "pool", "workloads", "mode", "joined_at", "dns", "ips", "cert_serial", "issuer_ca", "seal_key", "isolation", "policy")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    CPUS_FIELD_NUMBER: _ClassVar[int]
    MEMORY_FIELD_NUMBER: _ClassVar[int]
    ALLOCATED_CPU_FIELD_NUMBER: _ClassVar[int]
    ALLOCATED_MEMORY_FIELD_NUMBER: _ClassVar[int]
    LAST_HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    CERT_EXPIRY_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    CORDONED_FIELD_NUMBER: _ClassVar[int]
    DRAINING_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    RUNTIME_FIELD_NUMBER: _ClassVar[int]
    POOL_FIELD_NUMBER: _ClassVar[int]
    WORKLOADS_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    JOINED_AT_FIELD_NUMBER: _ClassVar[int]
    DNS_FIELD_NUMBER: _ClassVar[int]
    IPS_FIELD_NUMBER: _ClassVar[int]
    CERT_SERIAL_FIELD_NUMBER: _ClassVar[int]
    ISSUER_CA_FIELD_NUMBER: _ClassVar[int]
    SEAL_KEY_FIELD_NUMBER: _ClassVar[int]
    ISOLATION_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    name: str
    id: str
    address: str
    cpus: float
    memory: int
    allocated_cpu: float
    allocated_memory: int
    last_heartbeat: float
    cert_expiry: float
    state: str
    cordoned: bool
    draining: bool
    labels: _containers.ScalarMap[str, str]
    runtime: str
    pool: str
    workloads: int
    mode: str
    joined_at: float
    dns: _containers.RepeatedScalarFieldContainer[str]
    ips: _containers.RepeatedScalarFieldContainer[str]
    cert_serial: str
    issuer_ca: str
    seal_key: bytes
    isolation: str
    policy: _node_pb2.SandboxPolicy
    def __init__(self, name: _Optional[str] = ..., id: _Optional[str] = ..., address: _Optional[str] = ..., cpus: _Optional[float] = ..., memory: _Optional[int] = ..., allocated_cpu: _Optional[float] = ..., allocated_memory: _Optional[int] = ..., last_heartbeat: _Optional[float] = ..., cert_expiry: _Optional[float] = ..., state: _Optional[str] = ..., cordoned: _Optional[bool] = ..., draining: _Optional[bool] = ..., labels: _Optional[_Mapping[str, str]] = ..., runtime: _Optional[str] = ..., pool: _Optional[str] = ..., workloads: _Optional[int] = ..., mode: _Optional[str] = ..., joined_at: _Optional[float] = ..., dns: _Optional[_Iterable[str]] = ..., ips: _Optional[_Iterable[str]] = ..., cert_serial: _Optional[str] = ..., issuer_ca: _Optional[str] = ..., seal_key: _Optional[bytes] = ..., isolation: _Optional[str] = ..., policy: _Optional[_Union[_node_pb2.SandboxPolicy, _Mapping]] = ...) -> None: ...

class ListNodesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class NodeList(_message.Message):
    __slots__ = ("nodes",)
    NODES_FIELD_NUMBER: _ClassVar[int]
    nodes: _containers.RepeatedCompositeFieldContainer[NodeRecord]
    def __init__(self, nodes: _Optional[_Iterable[_Union[NodeRecord, _Mapping]]] = ...) -> None: ...

class NodeRef(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class AppLogsRequest(_message.Message):
    __slots__ = ("tenant", "app", "instance", "follow", "tail")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    APP_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_FIELD_NUMBER: _ClassVar[int]
    FOLLOW_FIELD_NUMBER: _ClassVar[int]
    TAIL_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    app: str
    instance: str
    follow: bool
    tail: int
    def __init__(self, tenant: _Optional[str] = ..., app: _Optional[str] = ..., instance: _Optional[str] = ..., follow: _Optional[bool] = ..., tail: _Optional[int] = ...) -> None: ...

class LogsGrant(_message.Message):
    __slots__ = ("node_address", "node_id", "container", "token")
    NODE_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    CONTAINER_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    node_address: str
    node_id: str
    container: str
    token: str
    def __init__(self, node_address: _Optional[str] = ..., node_id: _Optional[str] = ..., container: _Optional[str] = ..., token: _Optional[str] = ...) -> None: ...

class JoinTokenRequest(_message.Message):
    __slots__ = ("name", "ttl", "pool", "labels", "cpus", "memory", "policy")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    TTL_FIELD_NUMBER: _ClassVar[int]
    POOL_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    CPUS_FIELD_NUMBER: _ClassVar[int]
    MEMORY_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    name: str
    ttl: float
    pool: str
    labels: _containers.ScalarMap[str, str]
    cpus: float
    memory: int
    policy: _node_pb2.SandboxPolicy
    def __init__(self, name: _Optional[str] = ..., ttl: _Optional[float] = ..., pool: _Optional[str] = ..., labels: _Optional[_Mapping[str, str]] = ..., cpus: _Optional[float] = ..., memory: _Optional[int] = ..., policy: _Optional[_Union[_node_pb2.SandboxPolicy, _Mapping]] = ...) -> None: ...

class JoinTokenResponse(_message.Message):
    __slots__ = ("token", "expires_at")
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    token: str
    expires_at: float
    def __init__(self, token: _Optional[str] = ..., expires_at: _Optional[float] = ...) -> None: ...

class AuditRequest(_message.Message):
    __slots__ = ("since", "follow", "limit")
    SINCE_FIELD_NUMBER: _ClassVar[int]
    FOLLOW_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    since: int
    follow: bool
    limit: int
    def __init__(self, since: _Optional[int] = ..., follow: _Optional[bool] = ..., limit: _Optional[int] = ...) -> None: ...

class AuditEntry(_message.Message):
    __slots__ = ("seq", "json")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    JSON_FIELD_NUMBER: _ClassVar[int]
    seq: int
    json: str
    def __init__(self, seq: _Optional[int] = ..., json: _Optional[str] = ...) -> None: ...

class AuditVerifyRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class AuditVerifyResponse(_message.Message):
    __slots__ = ("ok", "message")
    OK_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    ok: bool
    message: str
    def __init__(self, ok: _Optional[bool] = ..., message: _Optional[str] = ...) -> None: ...

class WhoCanRequest(_message.Message):
    __slots__ = ("node", "since", "until")
    NODE_FIELD_NUMBER: _ClassVar[int]
    SINCE_FIELD_NUMBER: _ClassVar[int]
    UNTIL_FIELD_NUMBER: _ClassVar[int]
    node: str
    since: float
    until: float
    def __init__(self, node: _Optional[str] = ..., since: _Optional[float] = ..., until: _Optional[float] = ...) -> None: ...

class Capability(_message.Message):
    __slots__ = ("identity", "op", "resource", "tokens", "first", "last", "why")
    IDENTITY_FIELD_NUMBER: _ClassVar[int]
    OP_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    FIRST_FIELD_NUMBER: _ClassVar[int]
    LAST_FIELD_NUMBER: _ClassVar[int]
    WHY_FIELD_NUMBER: _ClassVar[int]
    identity: str
    op: str
    resource: str
    tokens: int
    first: float
    last: float
    why: str
    def __init__(self, identity: _Optional[str] = ..., op: _Optional[str] = ..., resource: _Optional[str] = ..., tokens: _Optional[int] = ..., first: _Optional[float] = ..., last: _Optional[float] = ..., why: _Optional[str] = ...) -> None: ...

class WhoCanResponse(_message.Message):
    __slots__ = ("node_id", "capabilities")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    CAPABILITIES_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    capabilities: _containers.RepeatedCompositeFieldContainer[Capability]
    def __init__(self, node_id: _Optional[str] = ..., capabilities: _Optional[_Iterable[_Union[Capability, _Mapping]]] = ...) -> None: ...

class RebalanceRequest(_message.Message):
    __slots__ = ("dry_run",)
    DRY_RUN_FIELD_NUMBER: _ClassVar[int]
    dry_run: bool
    def __init__(self, dry_run: _Optional[bool] = ...) -> None: ...

class RebalanceMove(_message.Message):
    __slots__ = ("workload", "from_node", "to_node", "reason")
    WORKLOAD_FIELD_NUMBER: _ClassVar[int]
    FROM_NODE_FIELD_NUMBER: _ClassVar[int]
    TO_NODE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    workload: str
    from_node: str
    to_node: str
    reason: str
    def __init__(self, workload: _Optional[str] = ..., from_node: _Optional[str] = ..., to_node: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class RebalancePlan(_message.Message):
    __slots__ = ("moves", "applied", "summary")
    MOVES_FIELD_NUMBER: _ClassVar[int]
    APPLIED_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    moves: _containers.RepeatedCompositeFieldContainer[RebalanceMove]
    applied: bool
    summary: str
    def __init__(self, moves: _Optional[_Iterable[_Union[RebalanceMove, _Mapping]]] = ..., applied: _Optional[bool] = ..., summary: _Optional[str] = ...) -> None: ...

class RevokeNodeRequest(_message.Message):
    __slots__ = ("name", "reason")
    NAME_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    name: str
    reason: str
    def __init__(self, name: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class PkiStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class CertStatus(_message.Message):
    __slots__ = ("kind", "name", "serial", "issuer_ca", "not_before", "not_after", "renewal", "node_state")
    KIND_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    SERIAL_FIELD_NUMBER: _ClassVar[int]
    ISSUER_CA_FIELD_NUMBER: _ClassVar[int]
    NOT_BEFORE_FIELD_NUMBER: _ClassVar[int]
    NOT_AFTER_FIELD_NUMBER: _ClassVar[int]
    RENEWAL_FIELD_NUMBER: _ClassVar[int]
    NODE_STATE_FIELD_NUMBER: _ClassVar[int]
    kind: str
    name: str
    serial: str
    issuer_ca: str
    not_before: float
    not_after: float
    renewal: str
    node_state: str
    def __init__(self, kind: _Optional[str] = ..., name: _Optional[str] = ..., serial: _Optional[str] = ..., issuer_ca: _Optional[str] = ..., not_before: _Optional[float] = ..., not_after: _Optional[float] = ..., renewal: _Optional[str] = ..., node_state: _Optional[str] = ...) -> None: ...

class PkiStatusResponse(_message.Message):
    __slots__ = ("signing_ca", "trusted_roots", "rotation", "certificates", "token_keys", "warnings")
    SIGNING_CA_FIELD_NUMBER: _ClassVar[int]
    TRUSTED_ROOTS_FIELD_NUMBER: _ClassVar[int]
    ROTATION_FIELD_NUMBER: _ClassVar[int]
    CERTIFICATES_FIELD_NUMBER: _ClassVar[int]
    TOKEN_KEYS_FIELD_NUMBER: _ClassVar[int]
    WARNINGS_FIELD_NUMBER: _ClassVar[int]
    signing_ca: str
    trusted_roots: _containers.RepeatedScalarFieldContainer[str]
    rotation: str
    certificates: _containers.RepeatedCompositeFieldContainer[CertStatus]
    token_keys: _containers.RepeatedScalarFieldContainer[str]
    warnings: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, signing_ca: _Optional[str] = ..., trusted_roots: _Optional[_Iterable[str]] = ..., rotation: _Optional[str] = ..., certificates: _Optional[_Iterable[_Union[CertStatus, _Mapping]]] = ..., token_keys: _Optional[_Iterable[str]] = ..., warnings: _Optional[_Iterable[str]] = ...) -> None: ...

class ExecRequest(_message.Message):
    __slots__ = ("tenant", "app", "instance", "command", "tty", "stdin", "ttl")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    APP_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_FIELD_NUMBER: _ClassVar[int]
    COMMAND_FIELD_NUMBER: _ClassVar[int]
    TTY_FIELD_NUMBER: _ClassVar[int]
    STDIN_FIELD_NUMBER: _ClassVar[int]
    TTL_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    app: str
    instance: str
    command: _containers.RepeatedScalarFieldContainer[str]
    tty: bool
    stdin: bool
    ttl: float
    def __init__(self, tenant: _Optional[str] = ..., app: _Optional[str] = ..., instance: _Optional[str] = ..., command: _Optional[_Iterable[str]] = ..., tty: _Optional[bool] = ..., stdin: _Optional[bool] = ..., ttl: _Optional[float] = ...) -> None: ...

class ExecGrant(_message.Message):
    __slots__ = ("node_address", "node_id", "container", "token", "expires_at")
    NODE_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    CONTAINER_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    node_address: str
    node_id: str
    container: str
    token: str
    expires_at: float
    def __init__(self, node_address: _Optional[str] = ..., node_id: _Optional[str] = ..., container: _Optional[str] = ..., token: _Optional[str] = ..., expires_at: _Optional[float] = ...) -> None: ...

class VersionRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class NodeVersion(_message.Message):
    __slots__ = ("name", "id", "version", "runtime", "runtime_version", "error")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    RUNTIME_FIELD_NUMBER: _ClassVar[int]
    RUNTIME_VERSION_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    name: str
    id: str
    version: str
    runtime: str
    runtime_version: str
    error: str
    def __init__(self, name: _Optional[str] = ..., id: _Optional[str] = ..., version: _Optional[str] = ..., runtime: _Optional[str] = ..., runtime_version: _Optional[str] = ..., error: _Optional[str] = ...) -> None: ...

class OrchestratorsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class OrchestratorMember(_message.Message):
    __slots__ = ("member", "address", "join_address", "leader")
    MEMBER_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    JOIN_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    LEADER_FIELD_NUMBER: _ClassVar[int]
    member: str
    address: str
    join_address: str
    leader: bool
    def __init__(self, member: _Optional[str] = ..., address: _Optional[str] = ..., join_address: _Optional[str] = ..., leader: _Optional[bool] = ...) -> None: ...

class EtcdMember(_message.Message):
    __slots__ = ("name", "endpoint", "healthy", "leader", "error")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    HEALTHY_FIELD_NUMBER: _ClassVar[int]
    LEADER_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    name: str
    endpoint: str
    healthy: bool
    leader: bool
    error: str
    def __init__(self, name: _Optional[str] = ..., endpoint: _Optional[str] = ..., healthy: _Optional[bool] = ..., leader: _Optional[bool] = ..., error: _Optional[str] = ...) -> None: ...

class OrchestratorsInfo(_message.Message):
    __slots__ = ("store", "epoch", "leader", "leader_address", "members", "etcd", "answered_by")
    STORE_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    LEADER_FIELD_NUMBER: _ClassVar[int]
    LEADER_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    ETCD_FIELD_NUMBER: _ClassVar[int]
    ANSWERED_BY_FIELD_NUMBER: _ClassVar[int]
    store: str
    epoch: int
    leader: str
    leader_address: str
    members: _containers.RepeatedCompositeFieldContainer[OrchestratorMember]
    etcd: _containers.RepeatedCompositeFieldContainer[EtcdMember]
    answered_by: str
    def __init__(self, store: _Optional[str] = ..., epoch: _Optional[int] = ..., leader: _Optional[str] = ..., leader_address: _Optional[str] = ..., members: _Optional[_Iterable[_Union[OrchestratorMember, _Mapping]]] = ..., etcd: _Optional[_Iterable[_Union[EtcdMember, _Mapping]]] = ..., answered_by: _Optional[str] = ...) -> None: ...

class VersionInfo(_message.Message):
    __slots__ = ("version", "id", "epoch", "nodes")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    NODES_FIELD_NUMBER: _ClassVar[int]
    version: str
    id: str
    epoch: int
    nodes: _containers.RepeatedCompositeFieldContainer[NodeVersion]
    def __init__(self, version: _Optional[str] = ..., id: _Optional[str] = ..., epoch: _Optional[int] = ..., nodes: _Optional[_Iterable[_Union[NodeVersion, _Mapping]]] = ...) -> None: ...

class SeedImageRequest(_message.Message):
    __slots__ = ("node", "image")
    NODE_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    node: str
    image: str
    def __init__(self, node: _Optional[str] = ..., image: _Optional[str] = ...) -> None: ...

class SeedImageResponse(_message.Message):
    __slots__ = ("node", "image")
    NODE_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    node: str
    image: str
    def __init__(self, node: _Optional[str] = ..., image: _Optional[str] = ...) -> None: ...

class PoolPolicyRecord(_message.Message):
    __slots__ = ("pool", "policy", "updated_at")
    POOL_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    pool: str
    policy: _node_pb2.SandboxPolicy
    updated_at: float
    def __init__(self, pool: _Optional[str] = ..., policy: _Optional[_Union[_node_pb2.SandboxPolicy, _Mapping]] = ..., updated_at: _Optional[float] = ...) -> None: ...

class ListPoolPoliciesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PoolPolicyList(_message.Message):
    __slots__ = ("pools",)
    POOLS_FIELD_NUMBER: _ClassVar[int]
    pools: _containers.RepeatedCompositeFieldContainer[PoolPolicyRecord]
    def __init__(self, pools: _Optional[_Iterable[_Union[PoolPolicyRecord, _Mapping]]] = ...) -> None: ...

class Quota(_message.Message):
    __slots__ = ("tenant", "cpu", "memory", "instances")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    CPU_FIELD_NUMBER: _ClassVar[int]
    MEMORY_FIELD_NUMBER: _ClassVar[int]
    INSTANCES_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    cpu: float
    memory: int
    instances: int
    def __init__(self, tenant: _Optional[str] = ..., cpu: _Optional[float] = ..., memory: _Optional[int] = ..., instances: _Optional[int] = ...) -> None: ...

class TenantRef(_message.Message):
    __slots__ = ("tenant",)
    TENANT_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    def __init__(self, tenant: _Optional[str] = ...) -> None: ...

class TenantUsage(_message.Message):
    __slots__ = ("tenant", "quota", "cpu", "memory", "instances", "apps")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    QUOTA_FIELD_NUMBER: _ClassVar[int]
    CPU_FIELD_NUMBER: _ClassVar[int]
    MEMORY_FIELD_NUMBER: _ClassVar[int]
    INSTANCES_FIELD_NUMBER: _ClassVar[int]
    APPS_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    quota: Quota
    cpu: float
    memory: int
    instances: int
    apps: int
    def __init__(self, tenant: _Optional[str] = ..., quota: _Optional[_Union[Quota, _Mapping]] = ..., cpu: _Optional[float] = ..., memory: _Optional[int] = ..., instances: _Optional[int] = ..., apps: _Optional[int] = ...) -> None: ...
