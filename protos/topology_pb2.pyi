from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PlacementStrategy(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PLACEMENT_STRATEGY_UNSPECIFIED: _ClassVar[PlacementStrategy]
    PLACEMENT_STRATEGY_SPREAD: _ClassVar[PlacementStrategy]
    PLACEMENT_STRATEGY_BINPACK: _ClassVar[PlacementStrategy]

class PoolPolicy(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    POOL_POLICY_UNSPECIFIED: _ClassVar[PoolPolicy]
    POOL_POLICY_ANY: _ClassVar[PoolPolicy]
    POOL_POLICY_DEDICATED: _ClassVar[PoolPolicy]
    POOL_POLICY_SHARED: _ClassVar[PoolPolicy]

class RestartPolicy(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RESTART_POLICY_UNSPECIFIED: _ClassVar[RestartPolicy]
    RESTART_POLICY_ALWAYS: _ClassVar[RestartPolicy]
    RESTART_POLICY_ON_FAILURE: _ClassVar[RestartPolicy]
    RESTART_POLICY_NEVER: _ClassVar[RestartPolicy]

class NetworkMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    NETWORK_MODE_UNSPECIFIED: _ClassVar[NetworkMode]
    NETWORK_MODE_NONE: _ClassVar[NetworkMode]
    NETWORK_MODE_HOST: _ClassVar[NetworkMode]

class Protocol(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PROTOCOL_UNSPECIFIED: _ClassVar[Protocol]
    PROTOCOL_TCP: _ClassVar[Protocol]
    PROTOCOL_UDP: _ClassVar[Protocol]
PLACEMENT_STRATEGY_UNSPECIFIED: PlacementStrategy
PLACEMENT_STRATEGY_SPREAD: PlacementStrategy
PLACEMENT_STRATEGY_BINPACK: PlacementStrategy
POOL_POLICY_UNSPECIFIED: PoolPolicy
POOL_POLICY_ANY: PoolPolicy
POOL_POLICY_DEDICATED: PoolPolicy
POOL_POLICY_SHARED: PoolPolicy
RESTART_POLICY_UNSPECIFIED: RestartPolicy
RESTART_POLICY_ALWAYS: RestartPolicy
RESTART_POLICY_ON_FAILURE: RestartPolicy
RESTART_POLICY_NEVER: RestartPolicy
NETWORK_MODE_UNSPECIFIED: NetworkMode
NETWORK_MODE_NONE: NetworkMode
NETWORK_MODE_HOST: NetworkMode
PROTOCOL_UNSPECIFIED: Protocol
PROTOCOL_TCP: Protocol
PROTOCOL_UDP: Protocol

class Resources(_message.Message):
    __slots__ = ("cpu", "memory")
    CPU_FIELD_NUMBER: _ClassVar[int]
    MEMORY_FIELD_NUMBER: _ClassVar[int]
    cpu: float
    memory: int
    def __init__(self, cpu: _Optional[float] = ..., memory: _Optional[int] = ...) -> None: ...

class Placement(_message.Message):
    __slots__ = ("strategy", "constraints", "pool")
    class ConstraintsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    CONSTRAINTS_FIELD_NUMBER: _ClassVar[int]
    POOL_FIELD_NUMBER: _ClassVar[int]
    strategy: PlacementStrategy
    constraints: _containers.ScalarMap[str, str]
    pool: PoolPolicy
    def __init__(self, strategy: _Optional[_Union[PlacementStrategy, str]] = ..., constraints: _Optional[_Mapping[str, str]] = ..., pool: _Optional[_Union[PoolPolicy, str]] = ...) -> None: ...

class Autoscale(_message.Message):
    __slots__ = ("min", "max", "target_cpu")
    MIN_FIELD_NUMBER: _ClassVar[int]
    MAX_FIELD_NUMBER: _ClassVar[int]
    TARGET_CPU_FIELD_NUMBER: _ClassVar[int]
    min: int
    max: int
    target_cpu: float
    def __init__(self, min: _Optional[int] = ..., max: _Optional[int] = ..., target_cpu: _Optional[float] = ...) -> None: ...

class ServiceVolume(_message.Message):
    __slots__ = ("name", "path", "read_only")
    NAME_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    READ_ONLY_FIELD_NUMBER: _ClassVar[int]
    name: str
    path: str
    read_only: bool
    def __init__(self, name: _Optional[str] = ..., path: _Optional[str] = ..., read_only: _Optional[bool] = ...) -> None: ...

class ServicePort(_message.Message):
    __slots__ = ("port", "protocol", "publish")
    PORT_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_FIELD_NUMBER: _ClassVar[int]
    PUBLISH_FIELD_NUMBER: _ClassVar[int]
    port: int
    protocol: Protocol
    publish: int
    def __init__(self, port: _Optional[int] = ..., protocol: _Optional[_Union[Protocol, str]] = ..., publish: _Optional[int] = ...) -> None: ...

class Service(_message.Message):
    __slots__ = ("name", "image", "command", "env", "replicas", "resources", "placement", "autoscale", "volumes", "restart", "max_unavailable", "links", "network", "ports", "user", "seccomp", "cap_add", "secrets")
    class EnvEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    COMMAND_FIELD_NUMBER: _ClassVar[int]
    ENV_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    RESOURCES_FIELD_NUMBER: _ClassVar[int]
    PLACEMENT_FIELD_NUMBER: _ClassVar[int]
    AUTOSCALE_FIELD_NUMBER: _ClassVar[int]
    VOLUMES_FIELD_NUMBER: _ClassVar[int]
    RESTART_FIELD_NUMBER: _ClassVar[int]
    MAX_UNAVAILABLE_FIELD_NUMBER: _ClassVar[int]
    LINKS_FIELD_NUMBER: _ClassVar[int]
    NETWORK_FIELD_NUMBER: _ClassVar[int]
    PORTS_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    SECCOMP_FIELD_NUMBER: _ClassVar[int]
    CAP_ADD_FIELD_NUMBER: _ClassVar[int]
    SECRETS_FIELD_NUMBER: _ClassVar[int]
    name: str
    image: str
    command: _containers.RepeatedScalarFieldContainer[str]
    env: _containers.ScalarMap[str, str]
    replicas: int
    resources: Resources
    placement: Placement
    autoscale: Autoscale
    volumes: _containers.RepeatedCompositeFieldContainer[ServiceVolume]
    restart: RestartPolicy
    max_unavailable: int
    links: _containers.RepeatedScalarFieldContainer[str]
    network: NetworkMode
    ports: _containers.RepeatedCompositeFieldContainer[ServicePort]
    user: str
    seccomp: str
    cap_add: _containers.RepeatedScalarFieldContainer[str]
    secrets: _containers.RepeatedCompositeFieldContainer[ServiceSecret]
    def __init__(self, name: _Optional[str] = ..., image: _Optional[str] = ..., command: _Optional[_Iterable[str]] = ..., env: _Optional[_Mapping[str, str]] = ..., replicas: _Optional[int] = ..., resources: _Optional[_Union[Resources, _Mapping]] = ..., placement: _Optional[_Union[Placement, _Mapping]] = ..., autoscale: _Optional[_Union[Autoscale, _Mapping]] = ..., volumes: _Optional[_Iterable[_Union[ServiceVolume, _Mapping]]] = ..., restart: _Optional[_Union[RestartPolicy, str]] = ..., max_unavailable: _Optional[int] = ..., links: _Optional[_Iterable[str]] = ..., network: _Optional[_Union[NetworkMode, str]] = ..., ports: _Optional[_Iterable[_Union[ServicePort, _Mapping]]] = ..., user: _Optional[str] = ..., seccomp: _Optional[str] = ..., cap_add: _Optional[_Iterable[str]] = ..., secrets: _Optional[_Iterable[_Union[ServiceSecret, _Mapping]]] = ...) -> None: ...

class ServiceSecret(_message.Message):
    __slots__ = ("name", "path", "env")
    NAME_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    ENV_FIELD_NUMBER: _ClassVar[int]
    name: str
    path: str
    env: str
    def __init__(self, name: _Optional[str] = ..., path: _Optional[str] = ..., env: _Optional[str] = ...) -> None: ...

class Application(_message.Message):
    __slots__ = ("name", "tenant", "services")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    SERVICES_FIELD_NUMBER: _ClassVar[int]
    name: str
    tenant: str
    services: _containers.RepeatedCompositeFieldContainer[Service]
    def __init__(self, name: _Optional[str] = ..., tenant: _Optional[str] = ..., services: _Optional[_Iterable[_Union[Service, _Mapping]]] = ...) -> None: ...
