"""The scheduler's rows as typed records."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg
from google.rpc import status_pb2

from comfyfleet.executions.v1 import executions_pb2
from services.scheduler.breaker import AttemptPermit
from services.scheduler.lifecycle import State
from services.scheduler.models import ModelNeed


def _status(data: bytes | None) -> status_pb2.Status | None:
    if data is None:
        return None
    status = status_pb2.Status()
    status.ParseFromString(data)
    return status


def _metrics(data: bytes | None) -> executions_pb2.ExecutionMetrics:
    metrics = executions_pb2.ExecutionMetrics()
    if data:
        metrics.ParseFromString(data)
    return metrics


def _progress(data: bytes | None) -> executions_pb2.NodeProgress | None:
    if data is None:
        return None
    progress = executions_pb2.NodeProgress()
    progress.ParseFromString(data)
    return progress


@dataclass(frozen=True)
class ExecutionRecord:
    """One row of ``executions``."""

    id: str
    tenant: str
    state: State
    workflow_json: str
    node_types: list[str]
    priority: int
    labels: dict[str, str]
    request_id: str | None
    request_hash: str
    max_attempts: int
    attempt: int
    queue_timeout_s: float
    run_timeout_s: float
    queued_since: datetime
    not_before: datetime
    lease_expires_at: datetime | None
    executor_id: str | None
    provider: str | None
    error: status_pb2.Status | None
    metrics: executions_pb2.ExecutionMetrics
    progress: executions_pb2.NodeProgress | None
    created_at: datetime
    started_at: datetime | None
    ended_at: datetime | None
    updated_at: datetime
    last_sequence: int
    # The models the workflow needs, pinned at submit time.
    models: list[ModelNeed] = field(default_factory=list)
    # What the execution's attempts cost so far, in US dollars.
    cost_usd: float = 0.0
    # When it must have ended; None for executions accepted before deadlines existed.
    deadline_at: datetime | None = None
    # The tenant's own concurrency cap sent with the submission; None takes the default.
    tenant_cap: int | None = None
    # The trace the execution belongs to (W3C traceparent); "" when untraced.
    traceparent: str = ""
    # Which of its events go to the tenant's webhooks (event type patterns); empty: all.
    webhook_events: list[str] = field(default_factory=list)
    # The environment it runs in: only that environment's executors take it.
    environment: str = "native"

    @property
    def measured(self) -> executions_pb2.ExecutionMetrics:
        """The metrics with the cost so far: every view of the execution carries it."""
        out = executions_pb2.ExecutionMetrics()
        out.CopyFrom(self.metrics)
        out.cost_usd = self.cost_usd
        return out

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> ExecutionRecord:
        fields: dict[str, Any] = dict(row)
        fields["state"] = State(row["state"])
        fields["node_types"] = list(row["node_types"])
        fields["labels"] = json.loads(row["labels"])
        fields["webhook_events"] = list(row["webhook_events"])
        fields["models"] = [ModelNeed.from_json(m) for m in json.loads(row["models"])]
        fields["error"] = _status(row["error"])
        fields["metrics"] = _metrics(row["metrics"])
        fields["progress"] = _progress(row["progress"])
        return cls(**fields)


@dataclass(frozen=True)
class InputRecord:
    """An input file of an execution, stored in object storage."""

    name: str
    key: str
    size_bytes: int
    content_type: str
    sha256: str

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> InputRecord:
        return cls(row["name"], row["key"], row["size_bytes"], row["content_type"], row["sha256"])


@dataclass(frozen=True)
class OutputRecord:
    """An output file an attempt uploaded to one of its slots."""

    attempt: int
    slot: int
    key: str
    node_id: str
    filename: str
    subfolder: str
    kind: str
    content_type: str
    size_bytes: int
    sha256: str

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> OutputRecord:
        return cls(**{k: row[k] for k in cls.__dataclass_fields__})


@dataclass(frozen=True)
class ExecutionView:
    """An execution with its input names and the outputs of its successful attempt."""

    record: ExecutionRecord
    input_names: list[str]
    outputs: list[OutputRecord]


@dataclass(frozen=True)
class Placement:
    """Where an attempt runs: an executor, how to reach it, and the provider it belongs to.

    ``transport`` says how to talk to it: "grpc" for executors that registered themselves
    (local and ECS), "runpod" for a RunPod serverless endpoint's REST API.
    """

    executor_id: str
    address: str
    provider: str
    transport: str = "grpc"
    gpu_name: str = ""


@dataclass(frozen=True)
class Dispatch:
    """A claimed execution and the attempt the dispatcher must now run, with the permit of
    the circuit breakers that let it through (None where no breaker guards it)."""

    record: ExecutionRecord
    attempt: int
    placement: Placement
    inputs: list[InputRecord]
    permit: AttemptPermit | None = None


@dataclass(frozen=True)
class ExecutorRecord:
    """One row of ``executors``, with the slots the scheduler has filled on it."""

    id: str
    address: str
    provider: str
    engine: str
    node_types: list[str]
    slots: int
    busy_slots: int
    gpu_name: str
    gpu_total_memory_bytes: int
    gpu_free_memory_bytes: int
    cached_models: list[str]
    registered_at: datetime
    last_seen: datetime
    environment: str = "native"

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> ExecutorRecord:
        fields = {k: row[k] for k in cls.__dataclass_fields__}
        fields["node_types"] = list(row["node_types"])
        fields["cached_models"] = list(row["cached_models"])
        return cls(**fields)
