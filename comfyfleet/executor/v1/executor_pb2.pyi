import datetime

from comfyfleet.executions.v1 import executions_pb2 as _executions_pb2
from comfyfleet.scheduler.v1 import scheduler_pb2 as _scheduler_pb2
from google.protobuf import duration_pb2 as _duration_pb2
from google.rpc import status_pb2 as _status_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class NodeState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    NODE_STATE_UNSPECIFIED: _ClassVar[NodeState]
    NODE_STATE_RUNNING: _ClassVar[NodeState]
    NODE_STATE_PROGRESS: _ClassVar[NodeState]
    NODE_STATE_DONE: _ClassVar[NodeState]
    NODE_STATE_CACHED: _ClassVar[NodeState]
NODE_STATE_UNSPECIFIED: NodeState
NODE_STATE_RUNNING: NodeState
NODE_STATE_PROGRESS: NodeState
NODE_STATE_DONE: NodeState
NODE_STATE_CACHED: NodeState

class InputRef(_message.Message):
    __slots__ = ("name", "url", "size_bytes")
    NAME_FIELD_NUMBER: _ClassVar[int]
    URL_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    name: str
    url: str
    size_bytes: int
    def __init__(self, name: _Optional[str] = ..., url: _Optional[str] = ..., size_bytes: _Optional[int] = ...) -> None: ...

class ModelRef(_message.Message):
    __slots__ = ("name", "folder", "sha256", "size_bytes", "url")
    NAME_FIELD_NUMBER: _ClassVar[int]
    FOLDER_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    URL_FIELD_NUMBER: _ClassVar[int]
    name: str
    folder: str
    sha256: str
    size_bytes: int
    url: str
    def __init__(self, name: _Optional[str] = ..., folder: _Optional[str] = ..., sha256: _Optional[str] = ..., size_bytes: _Optional[int] = ..., url: _Optional[str] = ...) -> None: ...

class OutputSlot(_message.Message):
    __slots__ = ("index", "url")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    URL_FIELD_NUMBER: _ClassVar[int]
    index: int
    url: str
    def __init__(self, index: _Optional[int] = ..., url: _Optional[str] = ...) -> None: ...

class ExecuteRequest(_message.Message):
    __slots__ = ("execution_id", "attempt", "tenant", "workflow_json", "inputs", "models", "output_slots", "run_timeout")
    EXECUTION_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    WORKFLOW_JSON_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_SLOTS_FIELD_NUMBER: _ClassVar[int]
    RUN_TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    execution_id: str
    attempt: int
    tenant: str
    workflow_json: str
    inputs: _containers.RepeatedCompositeFieldContainer[InputRef]
    models: _containers.RepeatedCompositeFieldContainer[ModelRef]
    output_slots: _containers.RepeatedCompositeFieldContainer[OutputSlot]
    run_timeout: _duration_pb2.Duration
    def __init__(self, execution_id: _Optional[str] = ..., attempt: _Optional[int] = ..., tenant: _Optional[str] = ..., workflow_json: _Optional[str] = ..., inputs: _Optional[_Iterable[_Union[InputRef, _Mapping]]] = ..., models: _Optional[_Iterable[_Union[ModelRef, _Mapping]]] = ..., output_slots: _Optional[_Iterable[_Union[OutputSlot, _Mapping]]] = ..., run_timeout: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class ExecuteUpdate(_message.Message):
    __slots__ = ("started", "node", "completed", "failed")
    STARTED_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    COMPLETED_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    started: Started
    node: NodeUpdate
    completed: Completed
    failed: Failed
    def __init__(self, started: _Optional[_Union[Started, _Mapping]] = ..., node: _Optional[_Union[NodeUpdate, _Mapping]] = ..., completed: _Optional[_Union[Completed, _Mapping]] = ..., failed: _Optional[_Union[Failed, _Mapping]] = ...) -> None: ...

class Started(_message.Message):
    __slots__ = ("executor_id", "device")
    EXECUTOR_ID_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    executor_id: str
    device: str
    def __init__(self, executor_id: _Optional[str] = ..., device: _Optional[str] = ...) -> None: ...

class NodeUpdate(_message.Message):
    __slots__ = ("state", "progress", "seconds")
    STATE_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    state: NodeState
    progress: _executions_pb2.NodeProgress
    seconds: float
    def __init__(self, state: _Optional[_Union[NodeState, str]] = ..., progress: _Optional[_Union[_executions_pb2.NodeProgress, _Mapping]] = ..., seconds: _Optional[float] = ...) -> None: ...

class UploadedOutput(_message.Message):
    __slots__ = ("slot", "output")
    SLOT_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    slot: int
    output: _executions_pb2.Output
    def __init__(self, slot: _Optional[int] = ..., output: _Optional[_Union[_executions_pb2.Output, _Mapping]] = ...) -> None: ...

class Completed(_message.Message):
    __slots__ = ("outputs", "metrics", "cached_nodes")
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    CACHED_NODES_FIELD_NUMBER: _ClassVar[int]
    outputs: _containers.RepeatedCompositeFieldContainer[UploadedOutput]
    metrics: _executions_pb2.ExecutionMetrics
    cached_nodes: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, outputs: _Optional[_Iterable[_Union[UploadedOutput, _Mapping]]] = ..., metrics: _Optional[_Union[_executions_pb2.ExecutionMetrics, _Mapping]] = ..., cached_nodes: _Optional[_Iterable[str]] = ...) -> None: ...

class Failed(_message.Message):
    __slots__ = ("error", "retryable")
    ERROR_FIELD_NUMBER: _ClassVar[int]
    RETRYABLE_FIELD_NUMBER: _ClassVar[int]
    error: _status_pb2.Status
    retryable: bool
    def __init__(self, error: _Optional[_Union[_status_pb2.Status, _Mapping]] = ..., retryable: _Optional[bool] = ...) -> None: ...

class CancelRequest(_message.Message):
    __slots__ = ("execution_id", "attempt")
    EXECUTION_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    execution_id: str
    attempt: int
    def __init__(self, execution_id: _Optional[str] = ..., attempt: _Optional[int] = ...) -> None: ...

class CancelResponse(_message.Message):
    __slots__ = ("found",)
    FOUND_FIELD_NUMBER: _ClassVar[int]
    found: bool
    def __init__(self, found: _Optional[bool] = ...) -> None: ...

class GetStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ExecutorStatus(_message.Message):
    __slots__ = ("executor_id", "execution_id", "attempt", "capacity", "cache_hits", "cache_misses", "weights_cache")
    EXECUTOR_ID_FIELD_NUMBER: _ClassVar[int]
    EXECUTION_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_FIELD_NUMBER: _ClassVar[int]
    CACHE_HITS_FIELD_NUMBER: _ClassVar[int]
    CACHE_MISSES_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_CACHE_FIELD_NUMBER: _ClassVar[int]
    executor_id: str
    execution_id: str
    attempt: int
    capacity: _scheduler_pb2.ExecutorCapacity
    cache_hits: int
    cache_misses: int
    weights_cache: WeightsCacheStatus
    def __init__(self, executor_id: _Optional[str] = ..., execution_id: _Optional[str] = ..., attempt: _Optional[int] = ..., capacity: _Optional[_Union[_scheduler_pb2.ExecutorCapacity, _Mapping]] = ..., cache_hits: _Optional[int] = ..., cache_misses: _Optional[int] = ..., weights_cache: _Optional[_Union[WeightsCacheStatus, _Mapping]] = ...) -> None: ...

class WeightsCacheStatus(_message.Message):
    __slots__ = ("models", "used_bytes", "budget_bytes", "hits", "misses", "evictions")
    MODELS_FIELD_NUMBER: _ClassVar[int]
    USED_BYTES_FIELD_NUMBER: _ClassVar[int]
    BUDGET_BYTES_FIELD_NUMBER: _ClassVar[int]
    HITS_FIELD_NUMBER: _ClassVar[int]
    MISSES_FIELD_NUMBER: _ClassVar[int]
    EVICTIONS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedScalarFieldContainer[str]
    used_bytes: int
    budget_bytes: int
    hits: int
    misses: int
    evictions: int
    def __init__(self, models: _Optional[_Iterable[str]] = ..., used_bytes: _Optional[int] = ..., budget_bytes: _Optional[int] = ..., hits: _Optional[int] = ..., misses: _Optional[int] = ..., evictions: _Optional[int] = ...) -> None: ...
