"""Proto messages to and from the executor's domain types, in one place."""

from __future__ import annotations

from comfyfleet.executions.v1 import executions_pb2
from comfyfleet.executor.v1 import executor_pb2
from comfyfleet.scheduler.v1 import scheduler_pb2
from services.executor.attempt import (
    AttemptSpec,
    Completed,
    InputSpec,
    SlotSpec,
    Started,
    Update,
)
from services.executor.engine import NodeEvent, NodeState
from services.executor.models import ModelSpec
from services.executor.weights import WeightsStats
from services.executor.worker import Capacity, WorkerStatus

_NODE_STATES = {
    NodeState.RUNNING: executor_pb2.NODE_STATE_RUNNING,
    NodeState.PROGRESS: executor_pb2.NODE_STATE_PROGRESS,
    NodeState.DONE: executor_pb2.NODE_STATE_DONE,
    NodeState.CACHED: executor_pb2.NODE_STATE_CACHED,
}


def attempt_spec(request: executor_pb2.ExecuteRequest) -> AttemptSpec:
    timeout = request.run_timeout.ToTimedelta().total_seconds()
    return AttemptSpec(
        execution_id=request.execution_id,
        attempt=request.attempt,
        tenant=request.tenant,
        workflow_json=request.workflow_json,
        inputs=tuple(InputSpec(i.name, i.url, i.size_bytes) for i in request.inputs),
        models=tuple(
            ModelSpec(m.name, m.folder, m.sha256, m.size_bytes, m.url) for m in request.models
        ),
        output_slots=tuple(SlotSpec(s.index, s.url) for s in request.output_slots),
        # An unset Duration reads as zero: no timeout of the executor's own.
        run_timeout_s=timeout if request.HasField("run_timeout") and timeout != 0 else None,
    )


def update_proto(update: Update) -> executor_pb2.ExecuteUpdate:
    if isinstance(update, Started):
        started = executor_pb2.Started(executor_id=update.executor_id, device=update.device)
        return executor_pb2.ExecuteUpdate(started=started)
    if isinstance(update, NodeEvent):
        return executor_pb2.ExecuteUpdate(node=_node_proto(update))
    if isinstance(update, Completed):
        return executor_pb2.ExecuteUpdate(completed=_completed_proto(update))
    failed = executor_pb2.Failed(error=update.error.to_status(), retryable=update.retryable)
    return executor_pb2.ExecuteUpdate(failed=failed)


def node_progress(event: NodeEvent) -> executions_pb2.NodeProgress:
    """A node event's progress, as executions carry it."""
    return executions_pb2.NodeProgress(
        node_id=event.node_id,
        class_type=event.class_type,
        value=event.value,
        max=event.max,
        nodes_done=event.nodes_done,
        nodes_total=event.nodes_total,
    )


def _node_proto(event: NodeEvent) -> executor_pb2.NodeUpdate:
    return executor_pb2.NodeUpdate(
        state=_NODE_STATES[event.state], progress=node_progress(event), seconds=event.seconds
    )


def _completed_proto(done: Completed) -> executor_pb2.Completed:
    outputs = [
        executor_pb2.UploadedOutput(
            slot=f.slot,
            output=executions_pb2.Output(
                node_id=f.node_id,
                filename=f.filename,
                subfolder=f.subfolder,
                kind=f.kind,
                content_type=f.content_type,
                size_bytes=f.size_bytes,
                sha256=f.sha256,
            ),
        )
        for f in done.outputs
    ]
    metrics = executions_pb2.ExecutionMetrics(
        execution_time_seconds=done.execution_time_s,
        gpu_utilization=done.usage.gpu_utilization,
        memory_used_bytes=done.usage.memory_used_bytes,
    )
    return executor_pb2.Completed(
        outputs=outputs, metrics=metrics, cached_nodes=list(done.cached_nodes)
    )


def capacity_proto(capacity: Capacity) -> scheduler_pb2.ExecutorCapacity:
    gpu = capacity.gpu
    return scheduler_pb2.ExecutorCapacity(
        gpu=scheduler_pb2.GpuInfo(
            name=gpu.name,
            total_memory_bytes=gpu.total_memory_bytes,
            free_memory_bytes=gpu.free_memory_bytes,
        ),
        slots=capacity.slots,
        busy_slots=capacity.busy_slots,
        cached_models=list(capacity.cached_models),
    )


def status_proto(status: WorkerStatus) -> executor_pb2.ExecutorStatus:
    proto = executor_pb2.ExecutorStatus(
        executor_id=status.executor_id,
        execution_id=status.execution_id,
        attempt=status.attempt,
        capacity=capacity_proto(status.capacity),
        cache_hits=status.cache_hits,
        cache_misses=status.cache_misses,
    )
    if status.weights is not None:
        proto.weights_cache.CopyFrom(_weights_proto(status.weights))
    return proto


def _weights_proto(stats: WeightsStats) -> executor_pb2.WeightsCacheStatus:
    return executor_pb2.WeightsCacheStatus(
        models=list(stats.models),
        used_bytes=stats.used_bytes,
        budget_bytes=stats.budget_bytes,
        hits=stats.hits,
        misses=stats.misses,
        evictions=stats.evictions,
    )
