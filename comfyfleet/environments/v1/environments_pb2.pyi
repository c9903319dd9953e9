import datetime

from google.api import annotations_pb2 as _annotations_pb2
from google.api import field_behavior_pb2 as _field_behavior_pb2
from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CatalogState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CATALOG_STATE_UNSPECIFIED: _ClassVar[CatalogState]
    CATALOG_STATE_PENDING: _ClassVar[CatalogState]
    CATALOG_STATE_KNOWN: _ClassVar[CatalogState]

class CatalogView(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CATALOG_VIEW_UNSPECIFIED: _ClassVar[CatalogView]
    CATALOG_VIEW_STRUCT: _ClassVar[CatalogView]
    CATALOG_VIEW_JSON: _ClassVar[CatalogView]
CATALOG_STATE_UNSPECIFIED: CatalogState
CATALOG_STATE_PENDING: CatalogState
CATALOG_STATE_KNOWN: CatalogState
CATALOG_VIEW_UNSPECIFIED: CatalogView
CATALOG_VIEW_STRUCT: CatalogView
CATALOG_VIEW_JSON: CatalogView

class CustomNodePackage(_message.Message):
    __slots__ = ("name", "source", "revision")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    name: str
    source: str
    revision: str
    def __init__(self, name: _Optional[str] = ..., source: _Optional[str] = ..., revision: _Optional[str] = ...) -> None: ...

class EnvironmentModel(_message.Message):
    __slots__ = ("folder", "name", "sha256", "size_bytes")
    FOLDER_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    folder: str
    name: str
    sha256: str
    size_bytes: int
    def __init__(self, folder: _Optional[str] = ..., name: _Optional[str] = ..., sha256: _Optional[str] = ..., size_bytes: _Optional[int] = ...) -> None: ...

class Environment(_message.Message):
    __slots__ = ("name", "engine", "comfyui_version", "custom_nodes", "python_packages", "apt_packages", "models", "description", "catalog_state", "node_type_count", "catalog_digest", "catalog_update_time", "executor_count", "create_time")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ENGINE_FIELD_NUMBER: _ClassVar[int]
    COMFYUI_VERSION_FIELD_NUMBER: _ClassVar[int]
    CUSTOM_NODES_FIELD_NUMBER: _ClassVar[int]
    PYTHON_PACKAGES_FIELD_NUMBER: _ClassVar[int]
    APT_PACKAGES_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    CATALOG_STATE_FIELD_NUMBER: _ClassVar[int]
    NODE_TYPE_COUNT_FIELD_NUMBER: _ClassVar[int]
    CATALOG_DIGEST_FIELD_NUMBER: _ClassVar[int]
    CATALOG_UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    EXECUTOR_COUNT_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    name: str
    engine: str
    comfyui_version: str
    custom_nodes: _containers.RepeatedCompositeFieldContainer[CustomNodePackage]
    python_packages: _containers.RepeatedScalarFieldContainer[str]
    apt_packages: _containers.RepeatedScalarFieldContainer[str]
    models: _containers.RepeatedCompositeFieldContainer[EnvironmentModel]
    description: str
    catalog_state: CatalogState
    node_type_count: int
    catalog_digest: str
    catalog_update_time: _timestamp_pb2.Timestamp
    executor_count: int
    create_time: _timestamp_pb2.Timestamp
    def __init__(self, name: _Optional[str] = ..., engine: _Optional[str] = ..., comfyui_version: _Optional[str] = ..., custom_nodes: _Optional[_Iterable[_Union[CustomNodePackage, _Mapping]]] = ..., python_packages: _Optional[_Iterable[str]] = ..., apt_packages: _Optional[_Iterable[str]] = ..., models: _Optional[_Iterable[_Union[EnvironmentModel, _Mapping]]] = ..., description: _Optional[str] = ..., catalog_state: _Optional[_Union[CatalogState, str]] = ..., node_type_count: _Optional[int] = ..., catalog_digest: _Optional[str] = ..., catalog_update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., executor_count: _Optional[int] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class EnvironmentCatalog(_message.Message):
    __slots__ = ("name", "object_info", "digest", "update_time", "object_info_json")
    NAME_FIELD_NUMBER: _ClassVar[int]
    OBJECT_INFO_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    OBJECT_INFO_JSON_FIELD_NUMBER: _ClassVar[int]
    name: str
    object_info: _struct_pb2.Struct
    digest: str
    update_time: _timestamp_pb2.Timestamp
    object_info_json: str
    def __init__(self, name: _Optional[str] = ..., object_info: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., digest: _Optional[str] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., object_info_json: _Optional[str] = ...) -> None: ...

class GetEnvironmentRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class ListEnvironmentsRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListEnvironmentsResponse(_message.Message):
    __slots__ = ("environments", "next_page_token")
    ENVIRONMENTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    environments: _containers.RepeatedCompositeFieldContainer[Environment]
    next_page_token: str
    def __init__(self, environments: _Optional[_Iterable[_Union[Environment, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class GetEnvironmentCatalogRequest(_message.Message):
    __slots__ = ("name", "view")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VIEW_FIELD_NUMBER: _ClassVar[int]
    name: str
    view: CatalogView
    def __init__(self, name: _Optional[str] = ..., view: _Optional[_Union[CatalogView, str]] = ...) -> None: ...

class CreateEnvironmentRequest(_message.Message):
    __slots__ = ("environment", "request_id")
    ENVIRONMENT_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    environment: Environment
    request_id: str
    def __init__(self, environment: _Optional[_Union[Environment, _Mapping]] = ..., request_id: _Optional[str] = ...) -> None: ...

class DeleteEnvironmentRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class DeleteEnvironmentResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...
