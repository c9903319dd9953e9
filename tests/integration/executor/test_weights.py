"""The models a job names are loaded into the weights cache and handed to the nodes that need them;
GetStatus reports what is loaded, with hits, misses and evictions."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import pytest
from google.rpc import code_pb2
from PIL import Image

from comfyfleet.common.errors import error_info
from comfyfleet.common.storage import ObjectStore
from comfyfleet.executor.v1 import executor_pb2
from services.executor.engine import Engine, NativeAdapter
from services.executor.native import NativeEngine
from tests.engine.weights_node import FOLDER, ScaleByModel, scale_model, scaled_white_workflow
from tests.integration.executor.conftest import (
    TENANT,
    ExecutorUnderTest,
    StartExecutor,
    collect,
    make_job,
    workflow_text,
)

# One scale model is a single float32: 4 bytes of weights.
MODEL_BYTES = 4


@pytest.fixture
def node() -> ScaleByModel:
    return ScaleByModel()


@pytest.fixture
def weights_engine(node: ScaleByModel, tmp_path: Path) -> Engine:
    """The native engine with one extra node that takes its weights from the run's context."""
    return NativeAdapter(NativeEngine("cpu", registry=node.registry()), tmp_path / "out")


async def model_ref(store: ObjectStore, name: str, data: bytes) -> executor_pb2.ModelRef:
    sha = hashlib.sha256(data).hexdigest()
    key = f"tenants/{TENANT}/models/{sha}"
    await store.put(key, data, "application/octet-stream")
    url = store.presign_get(key, 600)
    return executor_pb2.ModelRef(
        name=name, folder=FOLDER, sha256=sha, size_bytes=len(data), url=url
    )


async def scale_ref(store: ObjectStore, scale: float, name: str) -> executor_pb2.ModelRef:
    _, data = scale_model(scale)
    return await model_ref(store, name, data)


async def run_scaled(
    ex: ExecutorUnderTest, store: ObjectStore, model: executor_pb2.ModelRef, prefix: str = "s"
) -> tuple[list[executor_pb2.ExecuteUpdate], bytes | None]:
    workflow = json.dumps(scaled_white_workflow(model.name, prefix))
    job = await make_job(store, workflow)
    job.request.models.append(model)
    updates = await collect(ex.stub, job.request)
    if await store.size(job.output_keys[0]) is None:
        return updates, None
    return updates, await store.get(job.output_keys[0])


def first_pixel(png: bytes | None) -> tuple[int, ...]:
    assert png is not None
    pixel = Image.open(io.BytesIO(png)).getpixel((0, 0))
    assert isinstance(pixel, tuple)
    return pixel


async def status_of(ex: ExecutorUnderTest) -> executor_pb2.ExecutorStatus:
    return await ex.stub.GetStatus(executor_pb2.GetStatusRequest())


async def test_a_jobs_model_is_loaded_once_and_its_weights_reach_the_node(
    start_executor: StartExecutor, weights_engine: Engine, node: ScaleByModel, store: ObjectStore
) -> None:
    half = await scale_ref(store, 0.5, "half.safetensors")
    async with start_executor(engine=weights_engine, weights_budget_bytes=1 << 20) as ex:
        first, png = await run_scaled(ex, store, half, prefix="first")
        after_first = await status_of(ex)
        second, _ = await run_scaled(ex, store, half, prefix="second")
        status = await status_of(ex)

    assert first[-1].WhichOneof("update") == "completed", first[-1]
    assert second[-1].WhichOneof("update") == "completed", second[-1]
    assert first_pixel(png) == (127, 127, 127)
    assert [float(t) for t in node.seen] == [0.5]
    weights = after_first.weights_cache
    assert (weights.misses, weights.hits, list(weights.models)) == (1, 0, [half.sha256])
    assert (weights.used_bytes, weights.budget_bytes) == (MODEL_BYTES, 1 << 20)
    assert (status.weights_cache.misses, status.weights_cache.hits) == (1, 1)
    assert list(status.capacity.cached_models) == [half.sha256]


async def test_past_the_budget_the_least_recently_used_weights_are_dropped(
    start_executor: StartExecutor, weights_engine: Engine, store: ObjectStore
) -> None:
    half = await scale_ref(store, 0.5, "half.safetensors")
    quarter = await scale_ref(store, 0.25, "quarter.safetensors")
    async with start_executor(engine=weights_engine, weights_budget_bytes=MODEL_BYTES) as ex:
        await run_scaled(ex, store, half)
        updates, png = await run_scaled(ex, store, quarter)
        status = await status_of(ex)

    assert updates[-1].WhichOneof("update") == "completed", updates[-1]
    assert first_pixel(png) == (63, 63, 63)
    weights = status.weights_cache
    assert list(weights.models) == [quarter.sha256]
    assert (weights.evictions, weights.used_bytes, weights.misses) == (1, MODEL_BYTES, 2)
    # Both files stay in the disk cache, which has its own, larger bound.
    assert sorted(status.capacity.cached_models) == sorted([half.sha256, quarter.sha256])


async def test_a_model_file_that_cannot_be_loaded_fails_for_good(
    start_executor: StartExecutor, weights_engine: Engine, store: ObjectStore
) -> None:
    broken = await model_ref(
        store, "broken.safetensors", b"\x08\x00\x00\x00\x00\x00\x00\x00nothing!"
    )
    async with start_executor(engine=weights_engine) as ex:
        updates, _ = await run_scaled(ex, store, broken)
        status = await status_of(ex)

    failed = updates[-1].failed
    assert updates[-1].WhichOneof("update") == "failed"
    assert (failed.error.code, failed.retryable) == (code_pb2.FAILED_PRECONDITION, False)
    info = error_info(failed.error)
    assert info is not None and info.reason == "MODEL_UNREADABLE"
    assert info.metadata["model"] == f"{FOLDER}/broken.safetensors"
    assert list(status.weights_cache.models) == []
    assert status.execution_id == ""


async def test_models_in_other_formats_stay_on_disk_only(
    executor: ExecutorUnderTest, store: ObjectStore
) -> None:
    legacy = await model_ref(store, "legacy.ckpt", b"a pickled checkpoint")
    job = await make_job(store, workflow_text("a_tiny"))
    job.request.models.append(legacy)

    updates = await collect(executor.stub, job.request)
    status = await status_of(executor)

    assert updates[-1].WhichOneof("update") == "completed", updates[-1]
    assert list(status.weights_cache.models) == []
    assert status.weights_cache.misses == 0
    assert list(status.capacity.cached_models) == [legacy.sha256]
