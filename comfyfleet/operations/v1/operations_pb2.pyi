import datetime

from comfyfleet.executions.v1 import executions_pb2 as _executions_pb2
from comfyfleet.scheduler.v1 import scheduler_pb2 as _scheduler_pb2
from google.api import annotations_pb2 as _annotations_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GetOverviewRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Overview(_message.Message):
    __slots__ = ("read_time", "queue", "active_executions", "executors", "circuit_breakers", "scaling_decisions", "webhooks", "tenant_costs", "unavailable", "tenant_names")
    class TenantNamesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    READ_TIME_FIELD_NUMBER: _ClassVar[int]
    QUEUE_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_EXECUTIONS_FIELD_NUMBER: _ClassVar[int]
    EXECUTORS_FIELD_NUMBER: _ClassVar[int]
    CIRCUIT_BREAKERS_FIELD_NUMBER: _ClassVar[int]
    SCALING_DECISIONS_FIELD_NUMBER: _ClassVar[int]
    WEBHOOKS_FIELD_NUMBER: _ClassVar[int]
    TENANT_COSTS_FIELD_NUMBER: _ClassVar[int]
    UNAVAILABLE_FIELD_NUMBER: _ClassVar[int]
    TENANT_NAMES_FIELD_NUMBER: _ClassVar[int]
    read_time: _timestamp_pb2.Timestamp
    queue: _scheduler_pb2.GetQueueStatsResponse
    active_executions: _containers.RepeatedCompositeFieldContainer[_executions_pb2.Execution]
    executors: _containers.RepeatedCompositeFieldContainer[_scheduler_pb2.Executor]
    circuit_breakers: _containers.RepeatedCompositeFieldContainer[_scheduler_pb2.CircuitBreaker]
    scaling_decisions: _containers.RepeatedCompositeFieldContainer[_scheduler_pb2.ScalingDecision]
    webhooks: _containers.RepeatedCompositeFieldContainer[WebhookSummary]
    tenant_costs: _containers.RepeatedCompositeFieldContainer[_scheduler_pb2.TenantBudget]
    unavailable: _containers.RepeatedCompositeFieldContainer[UnavailablePart]
    tenant_names: _containers.ScalarMap[str, str]
    def __init__(self, read_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., queue: _Optional[_Union[_scheduler_pb2.GetQueueStatsResponse, _Mapping]] = ..., active_executions: _Optional[_Iterable[_Union[_executions_pb2.Execution, _Mapping]]] = ..., executors: _Optional[_Iterable[_Union[_scheduler_pb2.Executor, _Mapping]]] = ..., circuit_breakers: _Optional[_Iterable[_Union[_scheduler_pb2.CircuitBreaker, _Mapping]]] = ..., scaling_decisions: _Optional[_Iterable[_Union[_scheduler_pb2.ScalingDecision, _Mapping]]] = ..., webhooks: _Optional[_Iterable[_Union[WebhookSummary, _Mapping]]] = ..., tenant_costs: _Optional[_Iterable[_Union[_scheduler_pb2.TenantBudget, _Mapping]]] = ..., unavailable: _Optional[_Iterable[_Union[UnavailablePart, _Mapping]]] = ..., tenant_names: _Optional[_Mapping[str, str]] = ...) -> None: ...

class WebhookSummary(_message.Message):
    __slots__ = ("tenant", "subscription_id", "url", "enabled", "recent_deliveries", "succeeded", "failed", "pending", "last_error")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    SUBSCRIPTION_ID_FIELD_NUMBER: _ClassVar[int]
    URL_FIELD_NUMBER: _ClassVar[int]
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    RECENT_DELIVERIES_FIELD_NUMBER: _ClassVar[int]
    SUCCEEDED_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    PENDING_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    subscription_id: str
    url: str
    enabled: bool
    recent_deliveries: int
    succeeded: int
    failed: int
    pending: int
    last_error: str
    def __init__(self, tenant: _Optional[str] = ..., subscription_id: _Optional[str] = ..., url: _Optional[str] = ..., enabled: _Optional[bool] = ..., recent_deliveries: _Optional[int] = ..., succeeded: _Optional[int] = ..., failed: _Optional[int] = ..., pending: _Optional[int] = ..., last_error: _Optional[str] = ...) -> None: ...

class UnavailablePart(_message.Message):
    __slots__ = ("part", "reason")
    PART_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    part: str
    reason: str
    def __init__(self, part: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...
