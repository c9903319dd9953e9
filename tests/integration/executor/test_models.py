"""The model cache: downloads verified by sha256, hits and misses, eviction by size."""

from __future__ import annotations

import hashlib

import safetensors.torch
import torch
from google.rpc import code_pb2

from comfyfleet.common.errors import error_info
from comfyfleet.common.storage import ObjectStore
from comfyfleet.executor.v1 import executor_pb2
from tests.integration.executor.conftest import (
    ExecutorUnderTest,
    SchedulerUnderTest,
    StartExecutor,
    collect,
    make_job,
    workflow_text,
)
from tests.support.eventually import eventually


def safetensors_file(elements: int) -> bytes:
    """A real safetensors model of random float32 weights (``4 * elements`` bytes of them)."""
    return safetensors.torch.save({"weight": torch.randn(elements)})


async def model_ref(store: ObjectStore, name: str, data: bytes) -> executor_pb2.ModelRef:
    sha = hashlib.sha256(data).hexdigest()
    key = f"tenants/t-executor/models/{sha}"
    await store.put(key, data, "application/octet-stream")
    return executor_pb2.ModelRef(
        name=name,
        folder="checkpoints",
        sha256=sha,
        size_bytes=len(data),
        url=store.presign_get(key, 600),
    )


async def run_with(
    ex: ExecutorUnderTest, store: ObjectStore, *models: executor_pb2.ModelRef
) -> list[executor_pb2.ExecuteUpdate]:
    job = await make_job(store, workflow_text("a_tiny"))
    job.request.models.extend(models)
    return await collect(ex.stub, job.request)


async def test_a_model_is_downloaded_once_and_then_served_from_the_cache(
    executor: ExecutorUnderTest, store: ObjectStore
) -> None:
    model = await model_ref(store, "tiny.safetensors", safetensors_file(1024))

    first = await run_with(executor, store, model)
    second = await run_with(executor, store, model, model)

    assert first[-1].WhichOneof("update") == "completed"
    assert second[-1].WhichOneof("update") == "completed"
    status = await executor.stub.GetStatus(executor_pb2.GetStatusRequest())
    assert (status.cache_misses, status.cache_hits) == (1, 2)
    assert list(status.capacity.cached_models) == [model.sha256]


async def test_a_model_that_does_not_match_its_sha256_is_a_retryable_failure(
    executor: ExecutorUnderTest, store: ObjectStore
) -> None:
    model = await model_ref(store, "tiny.safetensors", b"the real bytes")
    model.sha256 = hashlib.sha256(b"other bytes").hexdigest()

    updates = await run_with(executor, store, model)

    failed = updates[-1].failed
    assert failed.retryable is True
    assert failed.error.code == code_pb2.UNAVAILABLE
    info = error_info(failed.error)
    assert info is not None and info.reason == "MODEL_CHECKSUM_MISMATCH"
    status = await executor.stub.GetStatus(executor_pb2.GetStatusRequest())
    assert list(status.capacity.cached_models) == []


async def test_least_recently_used_models_are_evicted_past_the_bound(
    start_executor: StartExecutor, store: ObjectStore
) -> None:
    old = await model_ref(store, "old.safetensors", safetensors_file(250))
    new = await model_ref(store, "new.safetensors", safetensors_file(250))
    async with start_executor(model_cache_bytes=1500) as ex:
        assert (await run_with(ex, store, old))[-1].WhichOneof("update") == "completed"
        assert (await run_with(ex, store, new))[-1].WhichOneof("update") == "completed"
        status = await ex.stub.GetStatus(executor_pb2.GetStatusRequest())
        kept = sorted((ex.running.worker.deps.models.root).iterdir())

    assert list(status.capacity.cached_models) == [new.sha256]
    assert [p.name for p in kept] == [new.sha256]


async def test_the_scheduler_hears_of_cached_models_by_heartbeat_and_on_registering_again(
    start_executor: StartExecutor, scheduler: SchedulerUnderTest, store: ObjectStore
) -> None:
    model = await model_ref(store, "known.safetensors", safetensors_file(64))
    recorder = scheduler.recorder
    async with start_executor() as ex:
        await run_with(ex, store, model)

        async def heard() -> None:
            assert recorder.heartbeats
            assert list(recorder.heartbeats[-1].capacity.cached_models) == [model.sha256]

        await eventually(heard)

    # A restarted executor adopts its disk cache and says so when it registers.
    async with start_executor():

        async def registered_again() -> None:
            assert len(recorder.registrations) == 2

        await eventually(registered_again)
    assert list(recorder.registrations[0].capacity.cached_models) == []
    assert list(recorder.registrations[1].capacity.cached_models) == [model.sha256]
