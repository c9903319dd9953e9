"""Issue 11's resource bounds through the platform's processes: what cannot fit is refused at
submit when its sizes are literal, and otherwise fails its node on the executor as a workflow
error (never retried) while the executor runs on; a decompression bomb is refused by its
header, inline at the gateway, uploaded at the executor."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from typing import Any

import aiohttp
import grpc
import pytest
from google.rpc import code_pb2
from grpc_status import rpc_status
from PIL import Image

from comfyfleet.common.errors import error_info, field_violations
from comfyfleet.executions.v1 import executions_pb2, executions_pb2_grpc
from comfyfleet.sdk import AsyncClient, Settings
from tests.e2e.conftest import Platform
from tests.e2e.test_uploads import new_key

MIB = 1 << 20
# Small enough that this CPU machine is never at risk, large enough for every other workflow.
EXECUTOR_BUDGET = 64 * MIB


@pytest.fixture(scope="module")
def platform_extra_env() -> dict[str, str]:
    return {"COMFYFLEET_EXECUTOR_MEMORY_BUDGET_BYTES": str(EXECUTOR_BUDGET)}


def png(size: tuple[int, int], mode: str = "RGB") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def bomb() -> Iterator[bytes]:
    """10000 x 10000 pixels (100 megapixels; 1.2 GiB as the float tensors LoadImage makes)
    in about 12 KB."""
    data = png((10000, 10000), "1")
    assert len(data) < 16 * 1024
    yield data


def node(class_type: str, **inputs: Any) -> dict[str, Any]:
    return {"class_type": class_type, "inputs": inputs}


HUGE = {
    "1": node("EmptyImage", width=16384, height=16384, batch_size=64, color=0),
    "2": node("SaveImage", images=["1", 0], filename_prefix="huge"),
}


def exploding(amount: int) -> dict[str, Any]:
    """Sizes that come from the loaded image: nobody can know them before the run."""
    return {
        "1": node("LoadImage", image="small.png"),
        "2": node("RepeatImageBatch", image=["1", 0], amount=amount),
        "3": node("ImageScaleBy", image=["2", 0], upscale_method="nearest-exact", scale_by=8.0),
        "4": node("ImageFromBatch", image=["3", 0], batch_index=0, length=1),
        "5": node("SaveImage", images=["4", 0], filename_prefix="boom"),
    }


LOADS_BOMB = {
    "1": node("LoadImage", image="bomb.png"),
    "2": node("SaveImage", images=["1", 0], filename_prefix="bomb"),
}


def bearer(key: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {key}"),)


async def refused(
    stub: executions_pb2_grpc.ExecutionServiceStub,
    key: str,
    request: executions_pb2.CreateExecutionRequest,
) -> tuple[list[tuple[str, str]], str]:
    """The violations (field, reason) and ErrorInfo reason of a refused CreateExecution."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.CreateExecution(request, metadata=bearer(key))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, caught.value.details()
    status = rpc_status.from_call(caught.value)  # type: ignore[arg-type]
    assert status is not None
    info = error_info(status)
    return [(v.field, v.reason) for v in field_violations(status)], info.reason if info else ""


async def nothing_stored(stub: executions_pb2_grpc.ExecutionServiceStub, key: str) -> None:
    listed = await stub.ListExecutions(executions_pb2.ListExecutionsRequest(), metadata=bearer(key))
    assert list(listed.executions) == []


async def events_of(client: AsyncClient, execution_id: str) -> list[str]:
    return [event.event_type async for event in client.watch(execution_id)]


async def test_an_empty_image_of_192_gib_is_refused_at_submit_naming_the_node(
    platform: Platform,
) -> None:
    _, key = await new_key(platform, "bounds-literal")
    request = executions_pb2.CreateExecutionRequest(workflow_json=json.dumps(HUGE))
    async with grpc.aio.insecure_channel(platform.addrs.gateway) as channel:
        stub = executions_pb2_grpc.ExecutionServiceStub(channel)
        violations, reason = await refused(stub, key, request)
        async with (
            aiohttp.ClientSession(
                platform.rest_url, headers={"Authorization": f"Bearer {key}"}
            ) as http,
            http.post("/v1/executions", json={"workflow": HUGE}) as response,
        ):
            assert response.status == 400
            body = await response.json()
        await nothing_stored(stub, key)

    assert violations == [('workflow["1"]', "NODE_OUTPUT_TOO_LARGE")]
    assert reason == "RESOURCE_BUDGET_EXCEEDED"
    over_rest = [v for d in body["details"] for v in d.get("fieldViolations", [])]
    assert [(v["field"], v["reason"]) for v in over_rest] == violations
    assert "[64, 16384, 16384, 3] tensor (192 GiB)" in over_rest[0]["description"]


async def test_a_linked_size_that_explodes_fails_once_and_the_executor_serves_the_next(
    platform: Platform,
) -> None:
    _, key = await new_key(platform, "bounds-linked")
    inputs = {"small.png": png((64, 64))}
    async with AsyncClient(Settings(platform.addrs.gateway, key)) as client:
        # 64 copies scaled 8 times: a 192 MiB tensor, three times the executor's budget.
        execution = await client.submit(exploding(64), inputs)
        events = await events_of(client, execution.id)
        failed = await client.get(execution.id)
        after = await client.wait((await client.submit(exploding(2), inputs)).id)

    assert failed.state == executions_pb2.EXECUTION_STATE_FAILED
    assert failed.attempt == 1 and "execution.retrying" not in events
    assert failed.error.code == code_pb2.FAILED_PRECONDITION
    info = error_info(failed.error)
    assert info is not None and info.reason == "MEMORY_BUDGET_EXCEEDED"
    assert (info.metadata["node_id"], info.metadata["node_type"]) == ("3", "ImageScaleBy")
    assert "would exceed this executor's memory budget of 64 MiB" in failed.error.message
    assert after.state == executions_pb2.EXECUTION_STATE_SUCCEEDED, after.error
    assert after.executor_id == failed.executor_id and len(after.outputs) == 1


async def test_an_uploaded_decompression_bomb_fails_naming_the_input(
    platform: Platform, bomb: bytes
) -> None:
    _, key = await new_key(platform, "bounds-bomb")
    # Over the threshold the SDK uploads it: the gateway never sees its bytes.
    settings = Settings(platform.addrs.gateway, key, upload_threshold_bytes=1024)
    async with AsyncClient(settings) as client:
        execution = await client.submit(LOADS_BOMB, {"bomb.png": bomb})
        events = await events_of(client, execution.id)
        failed = await client.get(execution.id)

    assert failed.state == executions_pb2.EXECUTION_STATE_FAILED
    assert failed.attempt == 1 and "execution.retrying" not in events
    info = error_info(failed.error)
    assert info is not None and info.reason == "INPUT_IMAGE_TOO_LARGE"
    assert info.metadata["node_id"] == "1"
    assert (
        "the input image 'bomb.png' is 10000x10000 pixels (100 megapixels) once decoded"
        in failed.error.message
    )


async def test_an_inline_decompression_bomb_is_refused_at_submit(
    platform: Platform, bomb: bytes
) -> None:
    _, key = await new_key(platform, "bounds-inline-bomb")
    request = executions_pb2.CreateExecutionRequest(
        workflow_json=json.dumps(LOADS_BOMB),
        inputs=[executions_pb2.InputFile(name="bomb.png", content=bomb)],
    )
    async with grpc.aio.insecure_channel(platform.addrs.gateway) as channel:
        stub = executions_pb2_grpc.ExecutionServiceStub(channel)
        violations, _ = await refused(stub, key, request)
        await nothing_stored(stub, key)

    assert violations == [("inputs[0].content", "INPUT_IMAGE_TOO_LARGE")]
