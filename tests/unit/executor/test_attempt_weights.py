"""An attempt loads its models through the weights cache, hands them to the engine and lets go."""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import threading
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

import aiohttp
import pytest
import safetensors.torch
import torch
from google.rpc import code_pb2

from comfyfleet.workflow.runner import CancelToken
from services.executor.attempt import AttemptDeps, AttemptSpec, Completed, Failed, Update
from services.executor.convert import status_proto
from services.executor.engine import EngineJob, EngineResult, OnEvent
from services.executor.models import ModelCache, ModelSpec
from services.executor.weights import WeightsCache, load_safetensors
from services.executor.worker import Worker
from tests.support.eventually import eventually


class RecordingEngine:
    """Records the weights each job carried; runs nothing."""

    name = "native"
    device = "cpu"

    def __init__(self) -> None:
        self.jobs: list[EngineJob] = []

    def node_types(self) -> list[str]:
        return []

    def run(self, job: EngineJob, on_event: OnEvent, cancel: CancelToken) -> EngineResult:
        self.jobs.append(job)
        return EngineResult((), ())


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def cached_model(models: ModelCache, name: str, fill: float) -> ModelSpec:
    """A safetensors model already in the disk cache (no download needed)."""
    data = safetensors.torch.save({"weight": torch.full((4,), fill)})
    sha256 = hashlib.sha256(data).hexdigest()
    models.root.mkdir(parents=True, exist_ok=True)
    (models.root / sha256).write_bytes(data)
    models.load()
    return ModelSpec(name, "checkpoints", sha256, len(data), "http://127.0.0.1:9/unused")


def spec(*models: ModelSpec, execution_id: str = "exe-1") -> AttemptSpec:
    return AttemptSpec(execution_id, 1, "t", "{}", (), models, (), None)


def worker_for(
    engine: RecordingEngine, weights: WeightsCache, tmp_path: Path, http: aiohttp.ClientSession
) -> tuple[Worker, ModelCache]:
    models = ModelCache(tmp_path / "models", 1 << 20)
    thread = concurrent.futures.ThreadPoolExecutor(1)
    deps = AttemptDeps("exec-1", engine, thread, http, models, tmp_path, 0.2, weights)
    return Worker(deps), models


async def run(worker: Worker, attempt_spec: AttemptSpec) -> list[Update]:
    return [u async for u in worker.start(attempt_spec).updates()]


async def test_the_engine_gets_the_loaded_weights_of_the_jobs_safetensors_models(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    engine = RecordingEngine()
    weights = WeightsCache("cpu", budget_bytes=1 << 20)
    worker, models = worker_for(engine, weights, tmp_path, http)
    model = cached_model(models, "one.safetensors", 1.0)

    updates = await run(worker, spec(model))

    assert isinstance(updates[-1], Completed)
    [job] = engine.jobs
    loaded = job.weights["checkpoints/one.safetensors"]
    assert loaded.sha256 == model.sha256
    assert torch.equal(loaded.tensors["weight"], torch.ones(4))
    assert job.models["checkpoints/one.safetensors"] == models.root / model.sha256
    status = status_proto(worker.status())
    assert list(status.weights_cache.models) == [model.sha256]
    assert (status.weights_cache.misses, status.weights_cache.used_bytes) == (1, 16)


async def test_a_cancel_while_the_weights_load_lets_go_of_them_once_loaded(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    gate = threading.Event()
    entered = threading.Event()

    def gated(path: Path, device: str) -> Mapping[str, torch.Tensor]:
        entered.set()
        gate.wait(5)
        return load_safetensors(path, device)

    engine = RecordingEngine()
    weights = WeightsCache("cpu", budget_bytes=0, load=gated)
    worker, models = worker_for(engine, weights, tmp_path, http)
    attempt = worker.start(spec(cached_model(models, "slow.safetensors", 2.0)))
    collecting = asyncio.create_task(asyncio.wait_for(_drain(attempt.updates()), timeout=10))

    async def loading() -> None:
        assert entered.is_set()

    await eventually(loading)
    assert worker.cancel("exe-1", 1) is True
    gate.set()
    updates = await collecting

    final = updates[-1]
    assert isinstance(final, Failed) and final.error.to_status().code == code_pb2.CANCELLED
    assert engine.jobs == []
    # Loaded after the cancel, then let go: with a zero budget nothing stays.
    assert (weights.loads, weights.cached()) == (1, [])
    await asyncio.wait_for(attempt.task, 5)
    assert worker.current is None


async def _drain(stream: AsyncIterator[Update]) -> list[Update]:
    return [u async for u in stream]


async def test_an_engine_without_a_weights_cache_reports_none(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    models = ModelCache(tmp_path / "models", 1)
    thread = concurrent.futures.ThreadPoolExecutor(1)
    deps = AttemptDeps("e", RecordingEngine(), thread, http, models, tmp_path, 0.2)

    status = status_proto(Worker(deps).status())

    assert not status.HasField("weights_cache")
