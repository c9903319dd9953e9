import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GpuInfo(_message.Message):
    __slots__ = ("name", "total_memory_bytes", "free_memory_bytes")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TOTAL_MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    FREE_MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    name: str
    total_memory_bytes: int
    free_memory_bytes: int
    def __init__(self, name: _Optional[str] = ..., total_memory_bytes: _Optional[int] = ..., free_memory_bytes: _Optional[int] = ...) -> None: ...

class ExecutorCapacity(_message.Message):
    __slots__ = ("gpu", "slots", "busy_slots", "cached_models")
    GPU_FIELD_NUMBER: _ClassVar[int]
    SLOTS_FIELD_NUMBER: _ClassVar[int]
    BUSY_SLOTS_FIELD_NUMBER: _ClassVar[int]
    CACHED_MODELS_FIELD_NUMBER: _ClassVar[int]
    gpu: GpuInfo
    slots: int
    busy_slots: int
    cached_models: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, gpu: _Optional[_Union[GpuInfo, _Mapping]] = ..., slots: _Optional[int] = ..., busy_slots: _Optional[int] = ..., cached_models: _Optional[_Iterable[str]] = ...) -> None: ...

class Executor(_message.Message):
    __slots__ = ("id", "address", "provider", "engine", "node_types", "capacity", "last_seen_time")
    ID_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    ENGINE_FIELD_NUMBER: _ClassVar[int]
    NODE_TYPES_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_FIELD_NUMBER: _ClassVar[int]
    LAST_SEEN_TIME_FIELD_NUMBER: _ClassVar[int]
    id: str
    address: str
    provider: str
    engine: str
    node_types: _containers.RepeatedScalarFieldContainer[str]
    capacity: ExecutorCapacity
    last_seen_time: _timestamp_pb2.Timestamp
    def __init__(self, id: _Optional[str] = ..., address: _Optional[str] = ..., provider: _Optional[str] = ..., engine: _Optional[str] = ..., node_types: _Optional[_Iterable[str]] = ..., capacity: _Optional[_Union[ExecutorCapacity, _Mapping]] = ..., last_seen_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class RegisterExecutorRequest(_message.Message):
    __slots__ = ("executor",)
    EXECUTOR_FIELD_NUMBER: _ClassVar[int]
    executor: Executor
    def __init__(self, executor: _Optional[_Union[Executor, _Mapping]] = ...) -> None: ...

class RegisterExecutorResponse(_message.Message):
    __slots__ = ("heartbeat_interval_seconds",)
    HEARTBEAT_INTERVAL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    heartbeat_interval_seconds: float
    def __init__(self, heartbeat_interval_seconds: _Optional[float] = ...) -> None: ...

class HeartbeatRequest(_message.Message):
    __slots__ = ("executor_id", "capacity")
    EXECUTOR_ID_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_FIELD_NUMBER: _ClassVar[int]
    executor_id: str
    capacity: ExecutorCapacity
    def __init__(self, executor_id: _Optional[str] = ..., capacity: _Optional[_Union[ExecutorCapacity, _Mapping]] = ...) -> None: ...

class HeartbeatResponse(_message.Message):
    __slots__ = ("reregister",)
    REREGISTER_FIELD_NUMBER: _ClassVar[int]
    reregister: bool
    def __init__(self, reregister: _Optional[bool] = ...) -> None: ...

class DeregisterExecutorRequest(_message.Message):
    __slots__ = ("executor_id",)
    EXECUTOR_ID_FIELD_NUMBER: _ClassVar[int]
    executor_id: str
    def __init__(self, executor_id: _Optional[str] = ...) -> None: ...

class DeregisterExecutorResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListExecutorsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListExecutorsResponse(_message.Message):
    __slots__ = ("executors",)
    EXECUTORS_FIELD_NUMBER: _ClassVar[int]
    executors: _containers.RepeatedCompositeFieldContainer[Executor]
    def __init__(self, executors: _Optional[_Iterable[_Union[Executor, _Mapping]]] = ...) -> None: ...

class GetQueueStatsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class QueueStats(_message.Message):
    __slots__ = ("priority", "tenant", "depth", "oldest_wait_seconds")
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    DEPTH_FIELD_NUMBER: _ClassVar[int]
    OLDEST_WAIT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    priority: int
    tenant: str
    depth: int
    oldest_wait_seconds: float
    def __init__(self, priority: _Optional[int] = ..., tenant: _Optional[str] = ..., depth: _Optional[int] = ..., oldest_wait_seconds: _Optional[float] = ...) -> None: ...

class GetQueueStatsResponse(_message.Message):
    __slots__ = ("depth", "oldest_wait_seconds", "running", "slices")
    DEPTH_FIELD_NUMBER: _ClassVar[int]
    OLDEST_WAIT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    RUNNING_FIELD_NUMBER: _ClassVar[int]
    SLICES_FIELD_NUMBER: _ClassVar[int]
    depth: int
    oldest_wait_seconds: float
    running: int
    slices: _containers.RepeatedCompositeFieldContainer[QueueStats]
    def __init__(self, depth: _Optional[int] = ..., oldest_wait_seconds: _Optional[float] = ..., running: _Optional[int] = ..., slices: _Optional[_Iterable[_Union[QueueStats, _Mapping]]] = ...) -> None: ...
