from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class VolumeMount(_message.Message):
    __slots__ = ("name", "path", "read_only")
    NAME_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    READ_ONLY_FIELD_NUMBER: _ClassVar[int]
    name: str
    path: str
    read_only: bool
    def __init__(self, name: _Optional[str] = ..., path: _Optional[str] = ..., read_only: _Optional[bool] = ...) -> None: ...

class EnvVar(_message.Message):
    __slots__ = ("name", "value")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    name: str
    value: str
    def __init__(self, name: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...

class PortSpec(_message.Message):
    __slots__ = ("port", "publish")
    PORT_FIELD_NUMBER: _ClassVar[int]
    PUBLISH_FIELD_NUMBER: _ClassVar[int]
    port: int
    publish: int
    def __init__(self, port: _Optional[int] = ..., publish: _Optional[int] = ...) -> None: ...

class LinkSpec(_message.Message):
    __slots__ = ("service", "address", "ports", "target")
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    PORTS_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    service: str
    address: str
    ports: _containers.RepeatedScalarFieldContainer[int]
    target: str
    def __init__(self, service: _Optional[str] = ..., address: _Optional[str] = ..., ports: _Optional[_Iterable[int]] = ..., target: _Optional[str] = ...) -> None: ...

class ContainerSpec(_message.Message):
    __slots__ = ("name", "workload_id", "image", "command", "env", "cpu", "memory", "volumes", "network", "generation", "service", "ports", "links", "user", "seccomp", "cap_add", "low_ports", "secrets")
    NAME_FIELD_NUMBER: _ClassVar[int]
    WORKLOAD_ID_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    COMMAND_FIELD_NUMBER: _ClassVar[int]
    ENV_FIELD_NUMBER: _ClassVar[int]
    CPU_FIELD_NUMBER: _ClassVar[int]
    MEMORY_FIELD_NUMBER: _ClassVar[int]
    VOLUMES_FIELD_NUMBER: _ClassVar[int]
    NETWORK_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    PORTS_FIELD_NUMBER: _ClassVar[int]
    LINKS_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    SECCOMP_FIELD_NUMBER: _ClassVar[int]
    CAP_ADD_FIELD_NUMBER: _ClassVar[int]
    LOW_PORTS_FIELD_NUMBER: _ClassVar[int]
    SECRETS_FIELD_NUMBER: _ClassVar[int]
    name: str
    workload_id: str
    image: str
    command: _containers.RepeatedScalarFieldContainer[str]
    env: _containers.RepeatedCompositeFieldContainer[EnvVar]
    cpu: float
    memory: int
    volumes: _containers.RepeatedCompositeFieldContainer[VolumeMount]
    network: str
    generation: int
    service: str
    ports: _containers.RepeatedCompositeFieldContainer[PortSpec]
    links: _containers.RepeatedCompositeFieldContainer[LinkSpec]
    user: str
    seccomp: str
    cap_add: _containers.RepeatedScalarFieldContainer[str]
    low_ports: bool
    secrets: _containers.RepeatedCompositeFieldContainer[SealedSecret]
    def __init__(self, name: _Optional[str] = ..., workload_id: _Optional[str] = ..., image: _Optional[str] = ..., command: _Optional[_Iterable[str]] = ..., env: _Optional[_Iterable[_Union[EnvVar, _Mapping]]] = ..., cpu: _Optional[float] = ..., memory: _Optional[int] = ..., volumes: _Optional[_Iterable[_Union[VolumeMount, _Mapping]]] = ..., network: _Optional[str] = ..., generation: _Optional[int] = ..., service: _Optional[str] = ..., ports: _Optional[_Iterable[_Union[PortSpec, _Mapping]]] = ..., links: _Optional[_Iterable[_Union[LinkSpec, _Mapping]]] = ..., user: _Optional[str] = ..., seccomp: _Optional[str] = ..., cap_add: _Optional[_Iterable[str]] = ..., low_ports: _Optional[bool] = ..., secrets: _Optional[_Iterable[_Union[SealedSecret, _Mapping]]] = ...) -> None: ...

class SandboxPolicy(_message.Message):
    __slots__ = ("host_network", "root", "cap_add", "unisolated", "low_ports")
    HOST_NETWORK_FIELD_NUMBER: _ClassVar[int]
    ROOT_FIELD_NUMBER: _ClassVar[int]
    CAP_ADD_FIELD_NUMBER: _ClassVar[int]
    UNISOLATED_FIELD_NUMBER: _ClassVar[int]
    LOW_PORTS_FIELD_NUMBER: _ClassVar[int]
    host_network: bool
    root: bool
    cap_add: _containers.RepeatedScalarFieldContainer[str]
    unisolated: bool
    low_ports: bool
    def __init__(self, host_network: _Optional[bool] = ..., root: _Optional[bool] = ..., cap_add: _Optional[_Iterable[str]] = ..., unisolated: _Optional[bool] = ..., low_ports: _Optional[bool] = ...) -> None: ...

class SecretUpdate(_message.Message):
    __slots__ = ("name", "secrets")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SECRETS_FIELD_NUMBER: _ClassVar[int]
    name: str
    secrets: _containers.RepeatedCompositeFieldContainer[SealedSecret]
    def __init__(self, name: _Optional[str] = ..., secrets: _Optional[_Iterable[_Union[SealedSecret, _Mapping]]] = ...) -> None: ...

class SealedSecret(_message.Message):
    __slots__ = ("name", "path", "env", "version", "sealed")
    NAME_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    ENV_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    SEALED_FIELD_NUMBER: _ClassVar[int]
    name: str
    path: str
    env: str
    version: int
    sealed: bytes
    def __init__(self, name: _Optional[str] = ..., path: _Optional[str] = ..., env: _Optional[str] = ..., version: _Optional[int] = ..., sealed: _Optional[bytes] = ...) -> None: ...

class ContainerStatus(_message.Message):
    __slots__ = ("name", "workload_id", "image", "state", "runtime_id", "has_exit_code", "exit_code", "started_at", "finished_at", "generation")
    NAME_FIELD_NUMBER: _ClassVar[int]
    WORKLOAD_ID_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    RUNTIME_ID_FIELD_NUMBER: _ClassVar[int]
    HAS_EXIT_CODE_FIELD_NUMBER: _ClassVar[int]
    EXIT_CODE_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    name: str
    workload_id: str
    image: str
    state: str
    runtime_id: str
    has_exit_code: bool
    exit_code: int
    started_at: float
    finished_at: float
    generation: int
    def __init__(self, name: _Optional[str] = ..., workload_id: _Optional[str] = ..., image: _Optional[str] = ..., state: _Optional[str] = ..., runtime_id: _Optional[str] = ..., has_exit_code: _Optional[bool] = ..., exit_code: _Optional[int] = ..., started_at: _Optional[float] = ..., finished_at: _Optional[float] = ..., generation: _Optional[int] = ...) -> None: ...

class ContainerRef(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class StopRequest(_message.Message):
    __slots__ = ("name", "timeout")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    name: str
    timeout: float
    def __init__(self, name: _Optional[str] = ..., timeout: _Optional[float] = ...) -> None: ...

class RemoveRequest(_message.Message):
    __slots__ = ("name", "force")
    NAME_FIELD_NUMBER: _ClassVar[int]
    FORCE_FIELD_NUMBER: _ClassVar[int]
    name: str
    force: bool
    def __init__(self, name: _Optional[str] = ..., force: _Optional[bool] = ...) -> None: ...

class ListRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ContainerList(_message.Message):
    __slots__ = ("containers",)
    CONTAINERS_FIELD_NUMBER: _ClassVar[int]
    containers: _containers.RepeatedCompositeFieldContainer[ContainerStatus]
    def __init__(self, containers: _Optional[_Iterable[_Union[ContainerStatus, _Mapping]]] = ...) -> None: ...

class LogsRequest(_message.Message):
    __slots__ = ("name", "follow", "tail")
    NAME_FIELD_NUMBER: _ClassVar[int]
    FOLLOW_FIELD_NUMBER: _ClassVar[int]
    TAIL_FIELD_NUMBER: _ClassVar[int]
    name: str
    follow: bool
    tail: int
    def __init__(self, name: _Optional[str] = ..., follow: _Optional[bool] = ..., tail: _Optional[int] = ...) -> None: ...

class LogChunk(_message.Message):
    __slots__ = ("data",)
    DATA_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    def __init__(self, data: _Optional[bytes] = ...) -> None: ...

class ContainerStats(_message.Message):
    __slots__ = ("name", "cpu_seconds", "cpu_fraction", "memory_bytes", "memory_limit")
    NAME_FIELD_NUMBER: _ClassVar[int]
    CPU_SECONDS_FIELD_NUMBER: _ClassVar[int]
    CPU_FRACTION_FIELD_NUMBER: _ClassVar[int]
    MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    MEMORY_LIMIT_FIELD_NUMBER: _ClassVar[int]
    name: str
    cpu_seconds: float
    cpu_fraction: float
    memory_bytes: int
    memory_limit: int
    def __init__(self, name: _Optional[str] = ..., cpu_seconds: _Optional[float] = ..., cpu_fraction: _Optional[float] = ..., memory_bytes: _Optional[int] = ..., memory_limit: _Optional[int] = ...) -> None: ...

class ImageRef(_message.Message):
    __slots__ = ("ref",)
    REF_FIELD_NUMBER: _ClassVar[int]
    ref: str
    def __init__(self, ref: _Optional[str] = ...) -> None: ...

class DataChunk(_message.Message):
    __slots__ = ("data", "digest")
    DATA_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    digest: str
    def __init__(self, data: _Optional[bytes] = ..., digest: _Optional[str] = ...) -> None: ...

class ImageImportChunk(_message.Message):
    __slots__ = ("ref", "data")
    REF_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    ref: str
    data: bytes
    def __init__(self, ref: _Optional[str] = ..., data: _Optional[bytes] = ...) -> None: ...

class ImageImportResult(_message.Message):
    __slots__ = ("refs",)
    REFS_FIELD_NUMBER: _ClassVar[int]
    refs: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, refs: _Optional[_Iterable[str]] = ...) -> None: ...

class VolumeRef(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class VolumeImportChunk(_message.Message):
    __slots__ = ("name", "data", "digest")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    name: str
    data: bytes
    digest: str
    def __init__(self, name: _Optional[str] = ..., data: _Optional[bytes] = ..., digest: _Optional[str] = ...) -> None: ...

class VolumeImportResult(_message.Message):
    __slots__ = ("name", "bytes", "files")
    NAME_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    FILES_FIELD_NUMBER: _ClassVar[int]
    name: str
    bytes: int
    files: int
    def __init__(self, name: _Optional[str] = ..., bytes: _Optional[int] = ..., files: _Optional[int] = ...) -> None: ...

class NodeInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class NodeInfo(_message.Message):
    __slots__ = ("node_id", "runtime", "runtime_version", "capstan_version", "cpus", "memory", "containers", "labels")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    RUNTIME_FIELD_NUMBER: _ClassVar[int]
    RUNTIME_VERSION_FIELD_NUMBER: _ClassVar[int]
    CAPSTAN_VERSION_FIELD_NUMBER: _ClassVar[int]
    CPUS_FIELD_NUMBER: _ClassVar[int]
    MEMORY_FIELD_NUMBER: _ClassVar[int]
    CONTAINERS_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    runtime: str
    runtime_version: str
    capstan_version: str
    cpus: float
    memory: int
    containers: int
    labels: _containers.ScalarMap[str, str]
    def __init__(self, node_id: _Optional[str] = ..., runtime: _Optional[str] = ..., runtime_version: _Optional[str] = ..., capstan_version: _Optional[str] = ..., cpus: _Optional[float] = ..., memory: _Optional[int] = ..., containers: _Optional[int] = ..., labels: _Optional[_Mapping[str, str]] = ...) -> None: ...

class TunnelFrame(_message.Message):
    __slots__ = ("res", "conn", "kind", "data")
    class Kind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        DATA: _ClassVar[TunnelFrame.Kind]
        OPEN: _ClassVar[TunnelFrame.Kind]
        EOF: _ClassVar[TunnelFrame.Kind]
        RESET: _ClassVar[TunnelFrame.Kind]
    DATA: TunnelFrame.Kind
    OPEN: TunnelFrame.Kind
    EOF: TunnelFrame.Kind
    RESET: TunnelFrame.Kind
    RES_FIELD_NUMBER: _ClassVar[int]
    CONN_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    res: str
    conn: int
    kind: TunnelFrame.Kind
    data: bytes
    def __init__(self, res: _Optional[str] = ..., conn: _Optional[int] = ..., kind: _Optional[_Union[TunnelFrame.Kind, str]] = ..., data: _Optional[bytes] = ...) -> None: ...

class ExecStart(_message.Message):
    __slots__ = ("name", "command", "tty", "stdin")
    NAME_FIELD_NUMBER: _ClassVar[int]
    COMMAND_FIELD_NUMBER: _ClassVar[int]
    TTY_FIELD_NUMBER: _ClassVar[int]
    STDIN_FIELD_NUMBER: _ClassVar[int]
    name: str
    command: _containers.RepeatedScalarFieldContainer[str]
    tty: bool
    stdin: bool
    def __init__(self, name: _Optional[str] = ..., command: _Optional[_Iterable[str]] = ..., tty: _Optional[bool] = ..., stdin: _Optional[bool] = ...) -> None: ...

class ExecInput(_message.Message):
    __slots__ = ("start", "stdin", "close_stdin")
    START_FIELD_NUMBER: _ClassVar[int]
    STDIN_FIELD_NUMBER: _ClassVar[int]
    CLOSE_STDIN_FIELD_NUMBER: _ClassVar[int]
    start: ExecStart
    stdin: bytes
    close_stdin: bool
    def __init__(self, start: _Optional[_Union[ExecStart, _Mapping]] = ..., stdin: _Optional[bytes] = ..., close_stdin: _Optional[bool] = ...) -> None: ...

class ExecOutput(_message.Message):
    __slots__ = ("stdout", "stderr", "exited", "exit_code")
    STDOUT_FIELD_NUMBER: _ClassVar[int]
    STDERR_FIELD_NUMBER: _ClassVar[int]
    EXITED_FIELD_NUMBER: _ClassVar[int]
    EXIT_CODE_FIELD_NUMBER: _ClassVar[int]
    stdout: bytes
    stderr: bytes
    exited: bool
    exit_code: int
    def __init__(self, stdout: _Optional[bytes] = ..., stderr: _Optional[bytes] = ..., exited: _Optional[bool] = ..., exit_code: _Optional[int] = ...) -> None: ...
