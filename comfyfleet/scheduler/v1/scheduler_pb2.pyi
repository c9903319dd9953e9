import datetime

from comfyfleet.environments.v1 import environments_pb2 as _environments_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CircuitBreakerState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CIRCUIT_BREAKER_STATE_UNSPECIFIED: _ClassVar[CircuitBreakerState]
    CIRCUIT_BREAKER_STATE_CLOSED: _ClassVar[CircuitBreakerState]
    CIRCUIT_BREAKER_STATE_OPEN: _ClassVar[CircuitBreakerState]
    CIRCUIT_BREAKER_STATE_HALF_OPEN: _ClassVar[CircuitBreakerState]
CIRCUIT_BREAKER_STATE_UNSPECIFIED: CircuitBreakerState
CIRCUIT_BREAKER_STATE_CLOSED: CircuitBreakerState
CIRCUIT_BREAKER_STATE_OPEN: CircuitBreakerState
CIRCUIT_BREAKER_STATE_HALF_OPEN: CircuitBreakerState

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
    __slots__ = ("id", "address", "provider", "engine", "node_types", "capacity", "last_seen_time", "environment")
    ID_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    ENGINE_FIELD_NUMBER: _ClassVar[int]
    NODE_TYPES_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_FIELD_NUMBER: _ClassVar[int]
    LAST_SEEN_TIME_FIELD_NUMBER: _ClassVar[int]
    ENVIRONMENT_FIELD_NUMBER: _ClassVar[int]
    id: str
    address: str
    provider: str
    engine: str
    node_types: _containers.RepeatedScalarFieldContainer[str]
    capacity: ExecutorCapacity
    last_seen_time: _timestamp_pb2.Timestamp
    environment: str
    def __init__(self, id: _Optional[str] = ..., address: _Optional[str] = ..., provider: _Optional[str] = ..., engine: _Optional[str] = ..., node_types: _Optional[_Iterable[str]] = ..., capacity: _Optional[_Union[ExecutorCapacity, _Mapping]] = ..., last_seen_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., environment: _Optional[str] = ...) -> None: ...

class RegisterExecutorRequest(_message.Message):
    __slots__ = ("executor", "environment", "object_info_json")
    EXECUTOR_FIELD_NUMBER: _ClassVar[int]
    ENVIRONMENT_FIELD_NUMBER: _ClassVar[int]
    OBJECT_INFO_JSON_FIELD_NUMBER: _ClassVar[int]
    executor: Executor
    environment: _environments_pb2.Environment
    object_info_json: str
    def __init__(self, executor: _Optional[_Union[Executor, _Mapping]] = ..., environment: _Optional[_Union[_environments_pb2.Environment, _Mapping]] = ..., object_info_json: _Optional[str] = ...) -> None: ...

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
    __slots__ = ("priority", "tenant", "depth", "oldest_wait_seconds", "provider", "environment")
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    DEPTH_FIELD_NUMBER: _ClassVar[int]
    OLDEST_WAIT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    ENVIRONMENT_FIELD_NUMBER: _ClassVar[int]
    priority: int
    tenant: str
    depth: int
    oldest_wait_seconds: float
    provider: str
    environment: str
    def __init__(self, priority: _Optional[int] = ..., tenant: _Optional[str] = ..., depth: _Optional[int] = ..., oldest_wait_seconds: _Optional[float] = ..., provider: _Optional[str] = ..., environment: _Optional[str] = ...) -> None: ...

class EnvironmentStats(_message.Message):
    __slots__ = ("environment", "depth", "oldest_wait_seconds", "running", "executors", "slots", "busy_slots")
    ENVIRONMENT_FIELD_NUMBER: _ClassVar[int]
    DEPTH_FIELD_NUMBER: _ClassVar[int]
    OLDEST_WAIT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    RUNNING_FIELD_NUMBER: _ClassVar[int]
    EXECUTORS_FIELD_NUMBER: _ClassVar[int]
    SLOTS_FIELD_NUMBER: _ClassVar[int]
    BUSY_SLOTS_FIELD_NUMBER: _ClassVar[int]
    environment: str
    depth: int
    oldest_wait_seconds: float
    running: int
    executors: int
    slots: int
    busy_slots: int
    def __init__(self, environment: _Optional[str] = ..., depth: _Optional[int] = ..., oldest_wait_seconds: _Optional[float] = ..., running: _Optional[int] = ..., executors: _Optional[int] = ..., slots: _Optional[int] = ..., busy_slots: _Optional[int] = ...) -> None: ...

class ProviderStats(_message.Message):
    __slots__ = ("provider", "executors", "slots", "busy_slots", "breaker_state")
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    EXECUTORS_FIELD_NUMBER: _ClassVar[int]
    SLOTS_FIELD_NUMBER: _ClassVar[int]
    BUSY_SLOTS_FIELD_NUMBER: _ClassVar[int]
    BREAKER_STATE_FIELD_NUMBER: _ClassVar[int]
    provider: str
    executors: int
    slots: int
    busy_slots: int
    breaker_state: CircuitBreakerState
    def __init__(self, provider: _Optional[str] = ..., executors: _Optional[int] = ..., slots: _Optional[int] = ..., busy_slots: _Optional[int] = ..., breaker_state: _Optional[_Union[CircuitBreakerState, str]] = ...) -> None: ...

class GetQueueStatsResponse(_message.Message):
    __slots__ = ("depth", "oldest_wait_seconds", "running", "slices", "providers", "environments")
    DEPTH_FIELD_NUMBER: _ClassVar[int]
    OLDEST_WAIT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    RUNNING_FIELD_NUMBER: _ClassVar[int]
    SLICES_FIELD_NUMBER: _ClassVar[int]
    PROVIDERS_FIELD_NUMBER: _ClassVar[int]
    ENVIRONMENTS_FIELD_NUMBER: _ClassVar[int]
    depth: int
    oldest_wait_seconds: float
    running: int
    slices: _containers.RepeatedCompositeFieldContainer[QueueStats]
    providers: _containers.RepeatedCompositeFieldContainer[ProviderStats]
    environments: _containers.RepeatedCompositeFieldContainer[EnvironmentStats]
    def __init__(self, depth: _Optional[int] = ..., oldest_wait_seconds: _Optional[float] = ..., running: _Optional[int] = ..., slices: _Optional[_Iterable[_Union[QueueStats, _Mapping]]] = ..., providers: _Optional[_Iterable[_Union[ProviderStats, _Mapping]]] = ..., environments: _Optional[_Iterable[_Union[EnvironmentStats, _Mapping]]] = ...) -> None: ...

class CircuitBreaker(_message.Message):
    __slots__ = ("name", "scope", "target", "state", "calls", "failed_calls", "slow_calls", "failure_rate", "slow_call_rate", "state_change_time", "transitions", "rejected_calls", "calls_in_flight")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    CALLS_FIELD_NUMBER: _ClassVar[int]
    FAILED_CALLS_FIELD_NUMBER: _ClassVar[int]
    SLOW_CALLS_FIELD_NUMBER: _ClassVar[int]
    FAILURE_RATE_FIELD_NUMBER: _ClassVar[int]
    SLOW_CALL_RATE_FIELD_NUMBER: _ClassVar[int]
    STATE_CHANGE_TIME_FIELD_NUMBER: _ClassVar[int]
    TRANSITIONS_FIELD_NUMBER: _ClassVar[int]
    REJECTED_CALLS_FIELD_NUMBER: _ClassVar[int]
    CALLS_IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    name: str
    scope: str
    target: str
    state: CircuitBreakerState
    calls: int
    failed_calls: int
    slow_calls: int
    failure_rate: float
    slow_call_rate: float
    state_change_time: _timestamp_pb2.Timestamp
    transitions: int
    rejected_calls: int
    calls_in_flight: int
    def __init__(self, name: _Optional[str] = ..., scope: _Optional[str] = ..., target: _Optional[str] = ..., state: _Optional[_Union[CircuitBreakerState, str]] = ..., calls: _Optional[int] = ..., failed_calls: _Optional[int] = ..., slow_calls: _Optional[int] = ..., failure_rate: _Optional[float] = ..., slow_call_rate: _Optional[float] = ..., state_change_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., transitions: _Optional[int] = ..., rejected_calls: _Optional[int] = ..., calls_in_flight: _Optional[int] = ...) -> None: ...

class CircuitBreakerEvent(_message.Message):
    __slots__ = ("breaker", "scope", "target", "from_state", "to_state", "reason", "timestamp", "replica")
    BREAKER_FIELD_NUMBER: _ClassVar[int]
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    FROM_STATE_FIELD_NUMBER: _ClassVar[int]
    TO_STATE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    REPLICA_FIELD_NUMBER: _ClassVar[int]
    breaker: str
    scope: str
    target: str
    from_state: CircuitBreakerState
    to_state: CircuitBreakerState
    reason: str
    timestamp: _timestamp_pb2.Timestamp
    replica: str
    def __init__(self, breaker: _Optional[str] = ..., scope: _Optional[str] = ..., target: _Optional[str] = ..., from_state: _Optional[_Union[CircuitBreakerState, str]] = ..., to_state: _Optional[_Union[CircuitBreakerState, str]] = ..., reason: _Optional[str] = ..., timestamp: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., replica: _Optional[str] = ...) -> None: ...

class ListCircuitBreakersRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListCircuitBreakersResponse(_message.Message):
    __slots__ = ("circuit_breakers", "replica")
    CIRCUIT_BREAKERS_FIELD_NUMBER: _ClassVar[int]
    REPLICA_FIELD_NUMBER: _ClassVar[int]
    circuit_breakers: _containers.RepeatedCompositeFieldContainer[CircuitBreaker]
    replica: str
    def __init__(self, circuit_breakers: _Optional[_Iterable[_Union[CircuitBreaker, _Mapping]]] = ..., replica: _Optional[str] = ...) -> None: ...

class TenantBudget(_message.Message):
    __slots__ = ("tenant", "limit_usd", "spent_usd", "period_start_time", "period_end_time")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    LIMIT_USD_FIELD_NUMBER: _ClassVar[int]
    SPENT_USD_FIELD_NUMBER: _ClassVar[int]
    PERIOD_START_TIME_FIELD_NUMBER: _ClassVar[int]
    PERIOD_END_TIME_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    limit_usd: float
    spent_usd: float
    period_start_time: _timestamp_pb2.Timestamp
    period_end_time: _timestamp_pb2.Timestamp
    def __init__(self, tenant: _Optional[str] = ..., limit_usd: _Optional[float] = ..., spent_usd: _Optional[float] = ..., period_start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., period_end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class SetTenantBudgetRequest(_message.Message):
    __slots__ = ("tenant", "limit_usd")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    LIMIT_USD_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    limit_usd: float
    def __init__(self, tenant: _Optional[str] = ..., limit_usd: _Optional[float] = ...) -> None: ...

class GetTenantBudgetRequest(_message.Message):
    __slots__ = ("tenant",)
    TENANT_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    def __init__(self, tenant: _Optional[str] = ...) -> None: ...

class ScalingDecision(_message.Message):
    __slots__ = ("provider", "current_replicas", "desired_replicas", "reason", "applied", "note", "decide_time", "queue_depth", "oldest_wait_seconds", "utilization")
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    CURRENT_REPLICAS_FIELD_NUMBER: _ClassVar[int]
    DESIRED_REPLICAS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    APPLIED_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    DECIDE_TIME_FIELD_NUMBER: _ClassVar[int]
    QUEUE_DEPTH_FIELD_NUMBER: _ClassVar[int]
    OLDEST_WAIT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    UTILIZATION_FIELD_NUMBER: _ClassVar[int]
    provider: str
    current_replicas: int
    desired_replicas: int
    reason: str
    applied: bool
    note: str
    decide_time: _timestamp_pb2.Timestamp
    queue_depth: int
    oldest_wait_seconds: float
    utilization: float
    def __init__(self, provider: _Optional[str] = ..., current_replicas: _Optional[int] = ..., desired_replicas: _Optional[int] = ..., reason: _Optional[str] = ..., applied: _Optional[bool] = ..., note: _Optional[str] = ..., decide_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., queue_depth: _Optional[int] = ..., oldest_wait_seconds: _Optional[float] = ..., utilization: _Optional[float] = ...) -> None: ...

class ListScalingDecisionsRequest(_message.Message):
    __slots__ = ("provider", "page_size")
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    provider: str
    page_size: int
    def __init__(self, provider: _Optional[str] = ..., page_size: _Optional[int] = ...) -> None: ...

class ListScalingDecisionsResponse(_message.Message):
    __slots__ = ("decisions",)
    DECISIONS_FIELD_NUMBER: _ClassVar[int]
    decisions: _containers.RepeatedCompositeFieldContainer[ScalingDecision]
    def __init__(self, decisions: _Optional[_Iterable[_Union[ScalingDecision, _Mapping]]] = ...) -> None: ...
