"""Proto <-> domain conversions of the ExecutorService."""

from __future__ import annotations

from datetime import timedelta

from google.rpc import code_pb2

from comfyfleet.common.errors import Cancelled
from comfyfleet.executor.v1 import executor_pb2
from services.executor.attempt import Completed, Failed, UploadedFile
from services.executor.convert import attempt_spec, update_proto
from services.executor.engine import NodeEvent, NodeState
from services.executor.resources import RunUsage


def request(**fields: object) -> executor_pb2.ExecuteRequest:
    return executor_pb2.ExecuteRequest(
        execution_id="exe-1",
        attempt=2,
        tenant="t",
        workflow_json="{}",
        inputs=[executor_pb2.InputRef(name="a.png", url="http://in", size_bytes=5)],
        models=[
            executor_pb2.ModelRef(
                name="m.safetensors", folder="loras", sha256="a" * 64, size_bytes=9, url="u"
            )
        ],
        output_slots=[executor_pb2.OutputSlot(index=7, url="http://out")],
        **fields,  # type: ignore[arg-type]
    )


def test_a_request_without_run_timeout_has_none() -> None:
    spec = attempt_spec(request())

    assert spec.run_timeout_s is None
    assert spec.key == ("exe-1", 2)
    assert spec.inputs[0].size_bytes == 5
    assert spec.models[0].key == "loras/m.safetensors"
    assert (spec.output_slots[0].index, spec.output_slots[0].url) == (7, "http://out")


def test_a_request_with_run_timeout_keeps_it() -> None:
    spec = attempt_spec(request(run_timeout=timedelta(seconds=2.5)))

    assert spec.run_timeout_s == 2.5


def test_a_node_event_becomes_a_node_update_with_counts() -> None:
    event = NodeEvent(NodeState.PROGRESS, "4", "ImageBlur", 2, 5, value=3, max=10)

    update = update_proto(event)

    assert update.node.state == executor_pb2.NODE_STATE_PROGRESS
    progress = update.node.progress
    assert (progress.node_id, progress.class_type) == ("4", "ImageBlur")
    assert (progress.value, progress.max, progress.nodes_done, progress.nodes_total) == (
        3,
        10,
        2,
        5,
    )


def test_completed_carries_outputs_and_metrics() -> None:
    file = UploadedFile(3, "9", "x_00001_.png", "sub", "images", "image/png", 12, "f" * 64)
    done = Completed((file,), 1.5, RunUsage(1024, 40.0), ("1", "2"))

    update = update_proto(done).completed

    assert update.outputs[0].slot == 3
    out = update.outputs[0].output
    assert (out.node_id, out.filename, out.subfolder, out.kind) == (
        "9",
        "x_00001_.png",
        "sub",
        "images",
    )
    assert (out.content_type, out.size_bytes, out.sha256, out.url) == (
        "image/png",
        12,
        "f" * 64,
        "",
    )
    metrics = update.metrics
    assert (metrics.execution_time_seconds, metrics.memory_used_bytes) == (1.5, 1024)
    assert metrics.gpu_utilization == 40.0
    assert list(update.cached_nodes) == ["1", "2"]


def test_failed_carries_the_status_and_retryable() -> None:
    update = update_proto(Failed(Cancelled("stop"))).failed

    assert update.error.code == code_pb2.CANCELLED
    assert update.retryable is False
