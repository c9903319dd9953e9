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

class ModelType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MODEL_TYPE_UNSPECIFIED: _ClassVar[ModelType]
    MODEL_TYPE_CHECKPOINT: _ClassVar[ModelType]
    MODEL_TYPE_LORA: _ClassVar[ModelType]
    MODEL_TYPE_VAE: _ClassVar[ModelType]
    MODEL_TYPE_CONTROLNET: _ClassVar[ModelType]
    MODEL_TYPE_UPSCALE: _ClassVar[ModelType]
    MODEL_TYPE_EMBEDDING: _ClassVar[ModelType]
    MODEL_TYPE_DIFFUSION_MODEL: _ClassVar[ModelType]
    MODEL_TYPE_TEXT_ENCODER: _ClassVar[ModelType]
    MODEL_TYPE_CLIP_VISION: _ClassVar[ModelType]
MODEL_TYPE_UNSPECIFIED: ModelType
MODEL_TYPE_CHECKPOINT: ModelType
MODEL_TYPE_LORA: ModelType
MODEL_TYPE_VAE: ModelType
MODEL_TYPE_CONTROLNET: ModelType
MODEL_TYPE_UPSCALE: ModelType
MODEL_TYPE_EMBEDDING: ModelType
MODEL_TYPE_DIFFUSION_MODEL: ModelType
MODEL_TYPE_TEXT_ENCODER: ModelType
MODEL_TYPE_CLIP_VISION: ModelType

class Model(_message.Message):
    __slots__ = ("id", "tenant", "name", "type", "version", "sha256", "size_bytes", "format", "metadata", "create_time")
    ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    id: str
    tenant: str
    name: str
    type: ModelType
    version: int
    sha256: str
    size_bytes: int
    format: str
    metadata: _struct_pb2.Struct
    create_time: _timestamp_pb2.Timestamp
    def __init__(self, id: _Optional[str] = ..., tenant: _Optional[str] = ..., name: _Optional[str] = ..., type: _Optional[_Union[ModelType, str]] = ..., version: _Optional[int] = ..., sha256: _Optional[str] = ..., size_bytes: _Optional[int] = ..., format: _Optional[str] = ..., metadata: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class UploadModelRequest(_message.Message):
    __slots__ = ("model", "chunk")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    model: Model
    chunk: bytes
    def __init__(self, model: _Optional[_Union[Model, _Mapping]] = ..., chunk: _Optional[bytes] = ...) -> None: ...

class GetModelRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ("page_size", "page_token", "type")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    type: ModelType
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., type: _Optional[_Union[ModelType, str]] = ...) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models", "next_page_token")
    MODELS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[Model]
    next_page_token: str
    def __init__(self, models: _Optional[_Iterable[_Union[Model, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class DeleteModelRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class DeleteModelResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ResolveModelsRequest(_message.Message):
    __slots__ = ("workflow_json", "references")
    WORKFLOW_JSON_FIELD_NUMBER: _ClassVar[int]
    REFERENCES_FIELD_NUMBER: _ClassVar[int]
    workflow_json: str
    references: _containers.RepeatedCompositeFieldContainer[ModelReference]
    def __init__(self, workflow_json: _Optional[str] = ..., references: _Optional[_Iterable[_Union[ModelReference, _Mapping]]] = ...) -> None: ...

class ModelReference(_message.Message):
    __slots__ = ("node_id", "input_name", "name", "folder")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    INPUT_NAME_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    FOLDER_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    input_name: str
    name: str
    folder: str
    def __init__(self, node_id: _Optional[str] = ..., input_name: _Optional[str] = ..., name: _Optional[str] = ..., folder: _Optional[str] = ...) -> None: ...

class ResolvedModel(_message.Message):
    __slots__ = ("node_id", "input_name", "model", "download_url", "folder")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    INPUT_NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    DOWNLOAD_URL_FIELD_NUMBER: _ClassVar[int]
    FOLDER_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    input_name: str
    model: Model
    download_url: str
    folder: str
    def __init__(self, node_id: _Optional[str] = ..., input_name: _Optional[str] = ..., model: _Optional[_Union[Model, _Mapping]] = ..., download_url: _Optional[str] = ..., folder: _Optional[str] = ...) -> None: ...

class ResolveModelsResponse(_message.Message):
    __slots__ = ("models",)
    MODELS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[ResolvedModel]
    def __init__(self, models: _Optional[_Iterable[_Union[ResolvedModel, _Mapping]]] = ...) -> None: ...

class StartModelUploadRequest(_message.Message):
    __slots__ = ("model", "size_bytes", "sha256", "part_size", "request_id")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    PART_SIZE_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    model: Model
    size_bytes: int
    sha256: str
    part_size: int
    request_id: str
    def __init__(self, model: _Optional[_Union[Model, _Mapping]] = ..., size_bytes: _Optional[int] = ..., sha256: _Optional[str] = ..., part_size: _Optional[int] = ..., request_id: _Optional[str] = ...) -> None: ...

class UploadPartTarget(_message.Message):
    __slots__ = ("part_number", "url")
    PART_NUMBER_FIELD_NUMBER: _ClassVar[int]
    URL_FIELD_NUMBER: _ClassVar[int]
    part_number: int
    url: str
    def __init__(self, part_number: _Optional[int] = ..., url: _Optional[str] = ...) -> None: ...

class StartModelUploadResponse(_message.Message):
    __slots__ = ("upload_id", "part_size", "parts", "expire_time")
    UPLOAD_ID_FIELD_NUMBER: _ClassVar[int]
    PART_SIZE_FIELD_NUMBER: _ClassVar[int]
    PARTS_FIELD_NUMBER: _ClassVar[int]
    EXPIRE_TIME_FIELD_NUMBER: _ClassVar[int]
    upload_id: str
    part_size: int
    parts: _containers.RepeatedCompositeFieldContainer[UploadPartTarget]
    expire_time: _timestamp_pb2.Timestamp
    def __init__(self, upload_id: _Optional[str] = ..., part_size: _Optional[int] = ..., parts: _Optional[_Iterable[_Union[UploadPartTarget, _Mapping]]] = ..., expire_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class CompletedPart(_message.Message):
    __slots__ = ("part_number", "etag")
    PART_NUMBER_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    part_number: int
    etag: str
    def __init__(self, part_number: _Optional[int] = ..., etag: _Optional[str] = ...) -> None: ...

class CompleteModelUploadRequest(_message.Message):
    __slots__ = ("upload_id", "parts")
    UPLOAD_ID_FIELD_NUMBER: _ClassVar[int]
    PARTS_FIELD_NUMBER: _ClassVar[int]
    upload_id: str
    parts: _containers.RepeatedCompositeFieldContainer[CompletedPart]
    def __init__(self, upload_id: _Optional[str] = ..., parts: _Optional[_Iterable[_Union[CompletedPart, _Mapping]]] = ...) -> None: ...

class AbortModelUploadRequest(_message.Message):
    __slots__ = ("upload_id",)
    UPLOAD_ID_FIELD_NUMBER: _ClassVar[int]
    upload_id: str
    def __init__(self, upload_id: _Optional[str] = ...) -> None: ...

class AbortModelUploadResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...
