"""Records to protos: executions and events carry everything the API promises."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlparse

from google.rpc import code_pb2, status_pb2

from comfyfleet.common.config import S3Config
from comfyfleet.common.storage import ObjectStore
from comfyfleet.executions.v1 import executions_pb2
from services.scheduler.lifecycle import State
from services.scheduler.records import ExecutionRecord, ExecutionView, OutputRecord
from services.scheduler.views import (
    EventType,
    OutputLinks,
    build_event,
    execution_proto,
    state_of,
)

T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
# Presigning is local arithmetic: no server is contacted.
LINKS = OutputLinks(
    ObjectStore.from_config(
        S3Config("http://s3.invalid:9000", "key", "secret", "us-east-1", "bucket")
    ),
    ttl_s=600,
)


def record(**changes: object) -> ExecutionRecord:
    fields: dict[str, object] = {
        "id": "exe_1",
        "tenant": "acme",
        "state": State.SUCCEEDED,
        "workflow_json": '{"1":{"class_type":"KSampler","inputs":{"steps":20}}}',
        "node_types": ["KSampler"],
        "priority": 3,
        "labels": {"a": "b"},
        "request_id": "req",
        "request_hash": "h",
        "max_attempts": 3,
        "attempt": 2,
        "queue_timeout_s": 60.0,
        "run_timeout_s": 60.0,
        "queued_since": T0,
        "not_before": T0,
        "lease_expires_at": None,
        "executor_id": "ex-1",
        "provider": "local",
        "error": None,
        "metrics": executions_pb2.ExecutionMetrics(queue_time_seconds=1.5),
        "progress": None,
        "created_at": T0,
        "started_at": T0 + timedelta(seconds=1),
        "ended_at": T0 + timedelta(seconds=2),
        "updated_at": T0 + timedelta(seconds=2),
        "last_sequence": 7,
    }
    fields.update(changes)
    return ExecutionRecord(**fields)  # type: ignore[arg-type]


OUTPUT = OutputRecord(
    2, 0, "tenants/acme/x/slot-000", "9", "r_1.png", "", "images", "image/png", 5, "ab"
)


def test_an_execution_carries_its_record_inputs_and_fresh_output_links() -> None:
    execution = execution_proto(ExecutionView(record(), ["cat.png"], [OUTPUT]), LINKS)
    assert (execution.id, execution.tenant, execution.state) == (
        "exe_1",
        "acme",
        executions_pb2.EXECUTION_STATE_SUCCEEDED,
    )
    assert execution.workflow["1"]["inputs"]["steps"] == 20
    assert list(execution.input_names) == ["cat.png"]
    assert (execution.attempt, execution.max_attempts, execution.last_sequence) == (2, 3, 7)
    assert (execution.provider, execution.executor_id, execution.request_id) == (
        "local",
        "ex-1",
        "req",
    )
    [out] = execution.outputs
    url = urlparse(out.url)
    assert url.path == "/bucket/tenants/acme/x/slot-000"
    query = parse_qs(url.query)
    assert query["X-Amz-Expires"] == ["600"]
    assert query["response-content-disposition"] == ['attachment; filename="r_1.png"']
    assert not execution.HasField("error") and not execution.HasField("progress")


def test_events_carry_tenant_attempt_sequence_and_what_happened() -> None:
    error = status_pb2.Status(code=code_pb2.UNAVAILABLE, message="gone")
    event = build_event(record(state=State.RETRYING), EventType.RETRYING, error=error)
    assert event.event_id.startswith("evt_")
    assert (event.execution_id, event.tenant, event.attempt, event.sequence) == (
        "exe_1",
        "acme",
        2,
        7,
    )
    assert (event.event_type, event.status) == (
        "execution.retrying",
        executions_pb2.EXECUTION_STATE_RETRYING,
    )
    assert (event.provider, event.executor_id) == ("local", "ex-1")
    assert event.error == error
    assert event.timestamp.ToDatetime(tzinfo=UTC) == T0 + timedelta(seconds=2)
    assert event.metrics.queue_time_seconds == 1.5

    progress = executions_pb2.NodeProgress(node_id="1", value=3, max=20)
    assert build_event(record(), EventType.PROGRESS, progress=progress).progress == progress
    done = build_event(record(), EventType.SUCCEEDED, outputs=[LINKS.output(OUTPUT)])
    assert list(done.output_urls) == [done.outputs[0].url]
    assert build_event(record(), EventType.QUEUED).event_id != done.event_id


def test_state_names_map_both_ways() -> None:
    for state in State:
        number = executions_pb2.ExecutionState.Value(f"EXECUTION_STATE_{state}")
        assert state_of(number) is state
    assert state_of(executions_pb2.EXECUTION_STATE_UNSPECIFIED) is None
