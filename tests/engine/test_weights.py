"""Nodes get model weights from the run's context: loaded by the weights cache, not from files."""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image

from comfyfleet.workflow.io import MemoryInputStore, MemoryOutputSink
from comfyfleet.workflow.runner import RunStatus
from services.executor.native import NativeEngine
from services.executor.weights import LoadedWeights, WeightsCache
from tests.engine.devices import native_device
from tests.engine.weights_node import FOLDER, ScaleByModel, scale_model, scaled_white_workflow

KEY = f"{FOLDER}/half.safetensors"


def loaded(cache: WeightsCache, tmp_path: Path, scale: float) -> LoadedWeights:
    sha256, data = scale_model(scale)
    path = tmp_path / sha256
    path.write_bytes(data)
    return cache.acquire(sha256, path, KEY)


def pixel(sink: MemoryOutputSink) -> tuple[int, ...]:
    [file] = sink.files
    pixel = Image.open(io.BytesIO(file.data)).getpixel((0, 0))
    assert isinstance(pixel, tuple)
    return pixel


def test_a_node_gets_the_loaded_tensors_through_its_context(tmp_path: Path) -> None:
    node = ScaleByModel()
    engine = NativeEngine(native_device(), registry=node.registry())
    cache = WeightsCache(str(engine.device), budget_bytes=1 << 20)
    half = loaded(cache, tmp_path, 0.5)
    sink = MemoryOutputSink()

    result = engine.run(
        scaled_white_workflow("half.safetensors"), MemoryInputStore(), sink, weights={KEY: half}
    )

    assert result.status is RunStatus.SUCCEEDED, result.error
    assert pixel(sink) == (127, 127, 127)
    # The very tensor the cache loaded, on the engine's device: no second copy, no file read.
    assert node.seen == [half.tensors["scale"]]
    assert node.seen[0] is half.tensors["scale"]
    assert node.seen[0].device == engine.device


def test_a_model_the_job_did_not_name_fails_the_node_that_needs_it() -> None:
    engine = NativeEngine(native_device(), registry=ScaleByModel().registry())

    result = engine.run(
        scaled_white_workflow("absent.safetensors"), MemoryInputStore(), MemoryOutputSink()
    )

    assert result.status is RunStatus.FAILED
    assert result.error is not None
    assert (result.error.node_id, result.error.class_type) == ("2", "ScaleByModel")
    assert result.error.exception_type.endswith("ModelNotLoaded")
    assert "checkpoints/absent.safetensors was not loaded" in result.error.exception_message


def test_another_file_under_the_same_name_is_not_answered_from_the_node_cache(
    tmp_path: Path,
) -> None:
    node = ScaleByModel()
    engine = NativeEngine(native_device(), registry=node.registry())
    cache = WeightsCache(str(engine.device), budget_bytes=1 << 20)
    workflow = scaled_white_workflow("half.safetensors")
    half, quarter = loaded(cache, tmp_path, 0.5), loaded(cache, tmp_path, 0.25)

    engine.run(workflow, MemoryInputStore(), MemoryOutputSink(), weights={KEY: half})
    same = engine.run(workflow, MemoryInputStore(), MemoryOutputSink(), weights={KEY: half})
    sink = MemoryOutputSink()
    other = engine.run(workflow, MemoryInputStore(), sink, weights={KEY: quarter})

    assert sorted(same.cached_nodes) == ["1", "2", "3"]
    assert other.executed_nodes == ("2", "3")
    assert pixel(sink) == (63, 63, 63)
    assert len(node.seen) == 2
