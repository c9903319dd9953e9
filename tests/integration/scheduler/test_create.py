"""CreateExecution: transactional enqueue, events published once, idempotency, bad input."""

from __future__ import annotations

import json

import asyncpg
import grpc
import pytest
from google.protobuf import json_format, struct_pb2
from grpc_status import rpc_status

from comfyfleet.common.errors import error_info, field_violations
from comfyfleet.executions.v1 import executions_pb2
from services.scheduler.config import Config
from services.scheduler.server import Scheduler
from tests.integration.scheduler.conftest import Clients
from tests.integration.scheduler.helpers import (
    STATE,
    create,
    get,
    graph_json,
    stream_has,
    stream_messages,
)
from tests.support.eventually import eventually
from tests.support.infra import S3Info

TENANT = "acme"


async def rows(cfg: Config, sql: str, *args: object) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(cfg.database.url)
    try:
        await conn.execute(f"SET search_path TO {cfg.schema}")
        return await conn.fetch(sql, *args)
    finally:
        await conn.close()


async def test_enqueue_writes_the_execution_its_first_event_and_the_outbox_together(
    clients: Clients, scheduler_config: Config, s3_server: S3Info
) -> None:
    execution = await create(
        clients,
        TENANT,
        inputs=[executions_pb2.InputFile(name="cat.png", content=b"\x89PNG-cat")],
        priority=5,
        labels={"team": "vision"},
    )
    assert execution.state == STATE.EXECUTION_STATE_QUEUED
    assert execution.tenant == TENANT
    assert execution.id.startswith("exe_")
    assert list(execution.input_names) == ["cat.png"]
    assert (execution.priority, dict(execution.labels)) == (5, {"team": "vision"})
    assert (execution.attempt, execution.max_attempts, execution.last_sequence) == (0, 3, 1)
    assert json_format.MessageToDict(execution.workflow) == {
        "1": {"class_type": "LoadImage", "inputs": {"image": "cat.png"}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0.0], "filename_prefix": "r"}},
    }

    events = await rows(
        scheduler_config, "SELECT * FROM events WHERE execution_id = $1", execution.id
    )
    outbox = await rows(scheduler_config, "SELECT * FROM outbox")
    assert [(e["sequence"], e["event_type"]) for e in events] == [(1, "execution.queued")]
    assert [o["event_id"] for o in outbox] == [events[0]["event_id"]]
    stored = s3_server.client().get_object(
        scheduler_config.s3.bucket, f"tenants/{TENANT}/executions/{execution.id}/inputs/cat.png"
    )
    assert stored.read() == b"\x89PNG-cat"

    [(headers, event)] = await stream_has(
        scheduler_config.nats.url, scheduler_config.nats.stream, execution.id, 1
    )
    assert headers["Nats-Msg-Id"] == event.event_id == events[0]["event_id"]
    assert (event.event_type, event.sequence, event.tenant) == ("execution.queued", 1, TENANT)
    assert event.status == STATE.EXECUTION_STATE_QUEUED


async def test_a_relayed_event_sent_again_is_stored_once(
    clients: Clients, scheduler: Scheduler, scheduler_config: Config
) -> None:
    execution = await create(clients, TENANT)
    await stream_has(scheduler_config.nats.url, scheduler_config.nats.stream, execution.id, 1)
    # As after a crash between publishing and marking the row published.
    await scheduler.relay.pool.execute("UPDATE outbox SET published_at = NULL")

    async def sent_again() -> None:
        assert await scheduler.relay.pool.fetchval(
            "SELECT bool_and(published_at IS NOT NULL) FROM outbox"
        )

    await eventually(sent_again)
    messages = await stream_messages(scheduler_config.nats.url, scheduler_config.nats.stream)
    assert [e.event_id for _, e in messages].count(messages[0][1].event_id) == 1
    assert len(messages) == 1


async def test_the_struct_workflow_is_stored_with_integers(
    clients: Clients, scheduler_config: Config
) -> None:
    workflow = struct_pb2.Struct()
    workflow.update({"3": {"class_type": "KSampler", "inputs": {"steps": 20, "cfg": 7.5}}})
    execution = await create(clients, TENANT, workflow=workflow, workflow_json="")
    [row] = await rows(scheduler_config, "SELECT workflow_json FROM executions")
    assert json.loads(row["workflow_json"]) == {
        "3": {"class_type": "KSampler", "inputs": {"cfg": 7.5, "steps": 20}}
    }
    assert '"steps":20' in row["workflow_json"]
    assert execution.workflow["3"]["inputs"]["steps"] == 20


async def test_the_same_request_id_returns_the_first_execution(
    clients: Clients, scheduler_config: Config
) -> None:
    first = await create(clients, TENANT, request_id="req-1")
    again = await create(clients, TENANT, request_id="req-1")
    assert again.id == first.id
    assert again.request_id == "req-1"
    other_tenant = await create(clients, "globex", request_id="req-1")
    assert other_tenant.id != first.id

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await create(clients, TENANT, request_id="req-1", priority=9)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    status = rpc_status.from_call(caught.value)
    assert status is not None
    assert [v.field for v in field_violations(status)] == ["request_id"]
    info = error_info(status)
    assert info is not None and info.reason == "REQUEST_ID_REUSED"
    count = await rows(
        scheduler_config, "SELECT tenant, count(*) AS n FROM executions GROUP BY tenant"
    )
    assert {r["tenant"]: r["n"] for r in count} == {TENANT: 1, "globex": 1}


async def test_bad_input_is_refused_with_field_violations_and_stores_nothing(
    clients: Clients, scheduler_config: Config, s3_server: S3Info
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await create(
            clients,
            TENANT,
            workflow_json='{"1": {"inputs": {}}}',
            inputs=[
                executions_pb2.InputFile(name="ok.png", content=b"fine"),
                executions_pb2.InputFile(name="remote.png", url="https://example.com/a.png"),
            ],
            priority=1000,
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    status = rpc_status.from_call(caught.value)
    assert status is not None
    found = {v.field: v.description for v in field_violations(status)}
    assert found == {
        'workflow_json["1"].class_type': "must be a non-empty string",
        "inputs[1].url": "fetching inputs from URLs is not enabled on this platform",
        "priority": "must be between -100 and 100",
    }
    for table in ("executions", "inputs", "events", "outbox"):
        assert await rows(scheduler_config, f"SELECT 1 FROM {table}") == [], table
    objects = list(s3_server.client().list_objects(scheduler_config.s3.bucket, recursive=True))
    assert objects == []


async def test_calls_without_a_tenant_are_unauthenticated(clients: Clients) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await clients.executions.GetExecution(executions_pb2.GetExecutionRequest(id="exe_x"))
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_another_tenants_execution_is_not_found(clients: Clients) -> None:
    mine = await create(clients, TENANT, workflow_json=graph_json())
    meta = clients.as_tenant("intruder")
    calls = [
        clients.executions.GetExecution(
            executions_pb2.GetExecutionRequest(id=mine.id), metadata=meta
        ),
        clients.executions.CancelExecution(
            executions_pb2.CancelExecutionRequest(id=mine.id), metadata=meta
        ),
    ]
    for call in calls:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    watch = clients.executions.WatchExecution(
        executions_pb2.WatchExecutionRequest(id=mine.id), metadata=meta
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in watch:
            pass
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    listed = await clients.executions.ListExecutions(
        executions_pb2.ListExecutionsRequest(), metadata=meta
    )
    assert list(listed.executions) == []
    assert (await get(clients, TENANT, mine.id)).state == STATE.EXECUTION_STATE_QUEUED


async def test_published_outbox_rows_are_pruned_but_the_history_stays(
    clients: Clients, scheduler: Scheduler, scheduler_config: Config
) -> None:
    execution = await create(clients, TENANT)
    await stream_has(scheduler_config.nats.url, scheduler_config.nats.stream, execution.id, 1)

    async def published() -> None:
        pending = await scheduler.relay.pool.fetchval(
            "SELECT count(*) FROM outbox WHERE published_at IS NULL"
        )
        assert pending == 0

    await eventually(published)
    assert await scheduler.relay.prune() == 0, "kept for the retention period"
    scheduler.relay.retention_s = 0.0
    assert await scheduler.relay.prune() == 1
    assert await rows(scheduler_config, "SELECT 1 FROM outbox") == []
    assert len(await rows(scheduler_config, "SELECT 1 FROM events")) == 1
