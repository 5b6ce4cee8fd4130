from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SecretWrite(_message.Message):
    __slots__ = ("tenant", "name", "value")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    name: str
    value: bytes
    def __init__(self, tenant: _Optional[str] = ..., name: _Optional[str] = ..., value: _Optional[bytes] = ...) -> None: ...

class SecretRef(_message.Message):
    __slots__ = ("tenant", "name")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    name: str
    def __init__(self, tenant: _Optional[str] = ..., name: _Optional[str] = ...) -> None: ...

class SecretListRequest(_message.Message):
    __slots__ = ("tenant",)
    TENANT_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    def __init__(self, tenant: _Optional[str] = ...) -> None: ...

class SecretUse(_message.Message):
    __slots__ = ("app", "service", "nodes")
    APP_FIELD_NUMBER: _ClassVar[int]
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    NODES_FIELD_NUMBER: _ClassVar[int]
    app: str
    service: str
    nodes: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, app: _Optional[str] = ..., service: _Optional[str] = ..., nodes: _Optional[_Iterable[str]] = ...) -> None: ...

class SecretInfo(_message.Message):
    __slots__ = ("tenant", "name", "version", "fingerprint", "created_at", "updated_at", "used_by")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    USED_BY_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    name: str
    version: int
    fingerprint: str
    created_at: float
    updated_at: float
    used_by: _containers.RepeatedCompositeFieldContainer[SecretUse]
    def __init__(self, tenant: _Optional[str] = ..., name: _Optional[str] = ..., version: _Optional[int] = ..., fingerprint: _Optional[str] = ..., created_at: _Optional[float] = ..., updated_at: _Optional[float] = ..., used_by: _Optional[_Iterable[_Union[SecretUse, _Mapping]]] = ...) -> None: ...

class SecretList(_message.Message):
    __slots__ = ("secrets",)
    SECRETS_FIELD_NUMBER: _ClassVar[int]
    secrets: _containers.RepeatedCompositeFieldContainer[SecretInfo]
    def __init__(self, secrets: _Optional[_Iterable[_Union[SecretInfo, _Mapping]]] = ...) -> None: ...

class SecretRecord(_message.Message):
    __slots__ = ("tenant", "name", "version", "created_at", "updated_at", "kek_id", "wrapped_dek", "nonce", "ciphertext", "fingerprint")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    KEK_ID_FIELD_NUMBER: _ClassVar[int]
    WRAPPED_DEK_FIELD_NUMBER: _ClassVar[int]
    NONCE_FIELD_NUMBER: _ClassVar[int]
    CIPHERTEXT_FIELD_NUMBER: _ClassVar[int]
    FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    name: str
    version: int
    created_at: float
    updated_at: float
    kek_id: str
    wrapped_dek: bytes
    nonce: bytes
    ciphertext: bytes
    fingerprint: str
    def __init__(self, tenant: _Optional[str] = ..., name: _Optional[str] = ..., version: _Optional[int] = ..., created_at: _Optional[float] = ..., updated_at: _Optional[float] = ..., kek_id: _Optional[str] = ..., wrapped_dek: _Optional[bytes] = ..., nonce: _Optional[bytes] = ..., ciphertext: _Optional[bytes] = ..., fingerprint: _Optional[str] = ...) -> None: ...
