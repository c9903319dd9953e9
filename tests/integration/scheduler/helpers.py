"""Small conveniences shared by the scheduler's integration tests."""

from __future__ import annotations

import functools
import gzip
import json
from typing import Any

import nats
from nats.js.errors import NotFoundError

from comfyfleet.common.environments import object_info_text
from comfyfleet.common.events import decode_event
from comfyfleet.executions.v1 import executions_pb2
from comfyfleet.scheduler.v1 import scheduler_pb2
from tests.integration.scheduler.conftest import Clients
from tests.support.eventually import eventually
from tests.support.paths import comfyui_ref

STATE = executions_pb2.ExecutionState
GRAPH = {
    "1": {"class_type": "LoadImage", "inputs": {"image": "cat.png"}},
    "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "r"}},
}


@functools.cache
def comfyui_object_info_json() -> str:
    """The real ComfyUI 0.3.64's ``GET /object_info`` (478 node types, carrying the
    checkpoint ``tiny-sd15.safetensors``), as its executors send it."""
    with gzip.open(comfyui_ref() / "object_info_full.json.gz") as f:
        return object_info_text(json.load(f))


async def declare_by_registering(
    clients: Clients, environment: str, object_info_json: str, engine: str = "comfyui"
) -> None:
    """Has an executor of ``environment`` register with its catalog, then leave: the
    environment is declared with a known catalog and an empty pool."""
    executor_id = f"gone-{environment}"
    await clients.scheduler.RegisterExecutor(
        scheduler_pb2.RegisterExecutorRequest(
            executor=scheduler_pb2.Executor(
                id=executor_id,
                address="127.0.0.1:1",
                engine=engine,
                environment=environment,
            ),
            object_info_json=object_info_json,
        )
    )
    await clients.scheduler.DeregisterExecutor(
        scheduler_pb2.DeregisterExecutorRequest(executor_id=executor_id)
    )


def graph_json(**changes: Any) -> str:
    graph = json.loads(json.dumps(GRAPH))
    graph["2"]["inputs"].update(changes)
    return json.dumps(graph)


async def create(clients: Clients, tenant: str, **fields: Any) -> executions_pb2.Execution:
    fields.setdefault("workflow_json", graph_json())
    return await clients.executions.CreateExecution(
        executions_pb2.CreateExecutionRequest(**fields), metadata=clients.as_tenant(tenant)
    )


async def get(clients: Clients, tenant: str, execution_id: str) -> executions_pb2.Execution:
    return await clients.executions.GetExecution(
        executions_pb2.GetExecutionRequest(id=execution_id), metadata=clients.as_tenant(tenant)
    )


async def wait_for_state(
    clients: Clients, tenant: str, execution_id: str, state: int, *, wait_s: float = 15.0
) -> executions_pb2.Execution:
    async def reached() -> executions_pb2.Execution:
        execution = await get(clients, tenant, execution_id)
        assert execution.state == state, STATE.Name(execution.state)
        return execution

    return await eventually(reached, timeout=wait_s)


async def watch(
    clients: Clients, tenant: str, execution_id: str, after: int = 0
) -> list[executions_pb2.WorkflowExecutionEvent]:
    """Every event of the execution after ``after``, until its terminal one."""
    call = clients.executions.WatchExecution(
        executions_pb2.WatchExecutionRequest(id=execution_id, after_sequence=after),
        metadata=clients.as_tenant(tenant),
        timeout=30,
    )
    return [event async for event in call]


def types(events: list[executions_pb2.WorkflowExecutionEvent]) -> list[str]:
    return [e.event_type.removeprefix("execution.") for e in events]


async def stream_messages(
    nats_url: str, stream: str
) -> list[tuple[dict[str, str], executions_pb2.WorkflowExecutionEvent]]:
    """Every message in the JetStream stream, with its headers, in stream order."""
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        try:
            info = await js.stream_info(stream)
        except NotFoundError:
            return []
        if not info.state.messages:
            return []
        out = []
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            msg = await js.get_msg(stream, seq)
            out.append((dict(msg.headers or {}), decode_event(msg.data or b"")))
        return out
    finally:
        await nc.close()


async def stream_has(
    nats_url: str, stream: str, execution_id: str, count: int
) -> list[tuple[dict[str, str], executions_pb2.WorkflowExecutionEvent]]:
    """Waits until the stream holds ``count`` events of the execution; returns them."""

    async def published() -> list[tuple[dict[str, str], executions_pb2.WorkflowExecutionEvent]]:
        found = [
            (h, e)
            for h, e in await stream_messages(nats_url, stream)
            if e.execution_id == execution_id
        ]
        assert len(found) >= count, f"{len(found)} of {count} events published"
        return found

    return await eventually(published)
