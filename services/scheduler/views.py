"""Records to protos: executions, outputs, executors and execution events."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

from google.protobuf import json_format, struct_pb2
from google.rpc import status_pb2

from comfyfleet.common.ids import new_id
from comfyfleet.common.storage import ObjectStore
from comfyfleet.common.timeutil import to_timestamp, utcnow
from comfyfleet.executions.v1 import executions_pb2
from comfyfleet.scheduler.v1 import scheduler_pb2
from services.scheduler.lifecycle import State
from services.scheduler.records import ExecutionRecord, ExecutionView, ExecutorRecord, OutputRecord

STATES = {state: executions_pb2.ExecutionState.Value(f"EXECUTION_STATE_{state}") for state in State}


def state_of(value: int) -> State | None:
    """The state an ExecutionState enum value names; None for UNSPECIFIED."""
    for state, number in STATES.items():
        if number == value:
            return state
    return None


class EventType:
    QUEUED = "execution.queued"
    DISPATCHED = "execution.dispatched"
    RUNNING = "execution.running"
    PROGRESS = "execution.progress"
    RETRYING = "execution.retrying"
    SUCCEEDED = "execution.succeeded"
    FAILED = "execution.failed"
    CANCELLED = "execution.cancelled"


TERMINAL_EVENTS = frozenset({EventType.SUCCEEDED, EventType.FAILED, EventType.CANCELLED})


@dataclass(frozen=True)
class OutputLinks:
    """Presigned GET URLs of output files, valid for ``ttl_s``."""

    objects: ObjectStore
    ttl_s: float

    def output(self, out: OutputRecord) -> executions_pb2.Output:
        url = self.objects.presign_get(out.key, self.ttl_s, filename=out.filename or None)
        return executions_pb2.Output(
            node_id=out.node_id,
            filename=out.filename,
            subfolder=out.subfolder,
            kind=out.kind,
            content_type=out.content_type,
            size_bytes=out.size_bytes,
            sha256=out.sha256,
            url=url,
            url_expire_time=to_timestamp(utcnow() + timedelta(seconds=self.ttl_s)),
        )


def workflow_struct(workflow_json: str) -> struct_pb2.Struct:
    workflow = struct_pb2.Struct()
    json_format.ParseDict(json.loads(workflow_json), workflow)
    return workflow


def execution_proto(view: ExecutionView, links: OutputLinks) -> executions_pb2.Execution:
    rec = view.record
    execution = executions_pb2.Execution(
        id=rec.id,
        tenant=rec.tenant,
        state=STATES[rec.state],
        workflow=workflow_struct(rec.workflow_json),
        input_names=view.input_names,
        priority=rec.priority,
        labels=rec.labels,
        outputs=[links.output(o) for o in view.outputs],
        metrics=rec.measured,
        attempt=rec.attempt,
        max_attempts=rec.max_attempts,
        provider=rec.provider or "",
        executor_id=rec.executor_id or "",
        create_time=to_timestamp(rec.created_at),
        start_time=to_timestamp(rec.started_at),
        end_time=to_timestamp(rec.ended_at),
        update_time=to_timestamp(rec.updated_at),
        last_sequence=rec.last_sequence,
        request_id=rec.request_id or "",
        webhook_events=rec.webhook_events,
        environment=rec.environment,
    )
    if rec.error is not None:
        execution.error.CopyFrom(rec.error)
    if rec.progress is not None:
        execution.progress.CopyFrom(rec.progress)
    return execution


def build_event(
    rec: ExecutionRecord,
    event_type: str,
    *,
    error: status_pb2.Status | None = None,
    progress: executions_pb2.NodeProgress | None = None,
    outputs: Sequence[executions_pb2.Output] = (),
) -> executions_pb2.WorkflowExecutionEvent:
    """The event for the change that left the execution as ``rec``; its sequence is the
    execution's ``last_sequence``, bumped by the same update."""
    event = executions_pb2.WorkflowExecutionEvent(
        event_id=new_id("evt"),
        execution_id=rec.id,
        event_type=event_type,
        timestamp=to_timestamp(rec.updated_at),
        status=STATES[rec.state],
        metrics=rec.measured,
        output_urls=[o.url for o in outputs],
        tenant=rec.tenant,
        attempt=rec.attempt,
        sequence=rec.last_sequence,
        provider=rec.provider or "",
        executor_id=rec.executor_id or "",
        outputs=outputs,
        webhook_events=rec.webhook_events,
    )
    if error is not None:
        event.error.CopyFrom(error)
    if progress is not None:
        event.progress.CopyFrom(progress)
    return event


def executor_proto(rec: ExecutorRecord) -> scheduler_pb2.Executor:
    return scheduler_pb2.Executor(
        id=rec.id,
        address=rec.address,
        provider=rec.provider,
        engine=rec.engine,
        node_types=rec.node_types,
        capacity=scheduler_pb2.ExecutorCapacity(
            gpu=scheduler_pb2.GpuInfo(
                name=rec.gpu_name,
                total_memory_bytes=rec.gpu_total_memory_bytes,
                free_memory_bytes=rec.gpu_free_memory_bytes,
            ),
            slots=rec.slots,
            busy_slots=rec.busy_slots,
            cached_models=rec.cached_models,
        ),
        last_seen_time=to_timestamp(rec.last_seen),
        environment=rec.environment,
    )
