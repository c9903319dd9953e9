"""The native engine end to end: benchmarks, cache, cancellation, runtime errors, I/O."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import safetensors.torch
from PIL import Image

from comfyfleet.workflow.io import (
    DirectoryInputStore,
    DirectoryOutputSink,
    MemoryInputStore,
    MemoryOutputSink,
)
from comfyfleet.workflow.runner import (
    CancelToken,
    ExecutionEvent,
    NodeFinished,
    NodeProgress,
    NodesCached,
    RunStatus,
)
from services.executor.native import NativeEngine
from tests.engine.devices import native_device


def _workflow(ref_dir: Path, name: str) -> dict[str, Any]:
    return json.loads((ref_dir / "workflows" / f"{name}.json").read_text())


def test_a_tiny(ref_dir: Path, engine: NativeEngine) -> None:
    sink = MemoryOutputSink()
    result = engine.run(_workflow(ref_dir, "a_tiny"), MemoryInputStore(), sink)
    assert result.status is RunStatus.SUCCEEDED
    [file] = sink.files
    assert (file.filename, file.subfolder, file.type) == ("bench_a_00001_.png", "", "output")
    image = Image.open(io.BytesIO(file.data))
    assert image.size == (64, 64) and image.getpixel((3, 3)) == (255, 255, 255)
    assert [o.filename for o in result.outputs] == ["bench_a_00001_.png"]
    if engine.device.type == "cuda":
        assert result.peak_memory_bytes is not None and result.peak_memory_bytes > 0
    else:
        assert result.peak_memory_bytes is None


def test_b_medium(ref_dir: Path, engine: NativeEngine) -> None:
    sink = MemoryOutputSink()
    result = engine.run(_workflow(ref_dir, "b_medium"), MemoryInputStore(), sink)
    assert result.status is RunStatus.SUCCEEDED
    assert [f.filename for f in sink.files] == [f"bench_b_0000{i}_.png" for i in range(1, 5)]
    image = Image.open(io.BytesIO(sink.files[0].data))
    assert image.size == (1024, 1024)
    # 0x3399FF inverted everywhere; 1 - 0.6 = 0.39999998 truncates to 101 as in ComfyUI
    assert image.getpixel((500, 500)) == (204, 101, 0)


def test_identical_resubmission_runs_nothing(ref_dir: Path, engine: NativeEngine) -> None:
    workflow = _workflow(ref_dir, "a_tiny")
    engine.run(workflow, MemoryInputStore(), MemoryOutputSink())
    events: list[ExecutionEvent] = []
    sink = MemoryOutputSink()
    result = engine.run(workflow, MemoryInputStore(), sink, on_progress=events.append)
    assert result.status is RunStatus.SUCCEEDED
    assert sorted(result.cached_nodes) == ["1", "2", "3"]
    assert result.executed_nodes == ()
    assert sink.files == []
    assert events[0] == NodesCached(("1", "2", "3"))
    replayed = [e for e in events if isinstance(e, NodeFinished)]
    assert [(e.node_id, e.cached) for e in replayed] == [("3", True)]
    assert [o.filename for o in result.outputs] == ["bench_a_00001_.png"]


def test_changed_input_reruns_downstream(ref_dir: Path, engine: NativeEngine) -> None:
    workflow = _workflow(ref_dir, "a_tiny")
    engine.run(workflow, MemoryInputStore(), MemoryOutputSink())
    workflow["3"]["inputs"]["filename_prefix"] = "other"
    result = engine.run(workflow, MemoryInputStore(), MemoryOutputSink())
    assert sorted(result.cached_nodes) == ["1", "2"]
    assert result.executed_nodes == ("3",)


def test_cancel(ref_dir: Path, engine: NativeEngine) -> None:
    token = CancelToken()

    def cancel_on_first_finish(event: ExecutionEvent) -> None:
        if isinstance(event, NodeFinished):
            token.cancel()

    sink = MemoryOutputSink()
    result = engine.run(
        _workflow(ref_dir, "a_tiny"),
        MemoryInputStore(),
        sink,
        on_progress=cancel_on_first_finish,
        cancel=token,
    )
    assert result.status is RunStatus.CANCELLED
    assert result.executed_nodes == ("1",)
    assert sink.files == []


def test_runtime_error_names_the_node(ref_dir: Path, engine: NativeEngine) -> None:
    workflow = _workflow(ref_dir, "runtime_error")
    result = engine.run(workflow, MemoryInputStore(), MemoryOutputSink())
    assert result.status is RunStatus.FAILED
    assert result.error is not None
    assert (result.error.node_id, result.error.class_type) == ("3", "LatentConcat")
    assert result.error.exception_type == "RuntimeError"
    assert result.error.exception_message.startswith(
        "Sizes of tensors must match except in dimension 3. Expected size 8 but got size 16"
    )
    assert sorted(result.error.executed) == ["1", "2"]
    body = result.error.to_comfy()
    assert body["node_type"] == "LatentConcat" and body["exception_message"].endswith(".\n")


def test_invalid_workflow_is_not_run(ref_dir: Path, engine: NativeEngine) -> None:
    result = engine.run(
        _workflow(ref_dir, "invalid_missing_link"), MemoryInputStore(), MemoryOutputSink()
    )
    assert result.status is RunStatus.INVALID
    assert result.validation.error.type == "prompt_outputs_failed_validation"


def test_missing_input_file_fails_validation(engine: NativeEngine) -> None:
    workflow = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "absent.png"}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "x"}},
    }
    result = engine.run(workflow, MemoryInputStore(), MemoryOutputSink())
    assert result.status is RunStatus.INVALID
    [violation] = [v for v in result.validation.field_violations() if "inputs" in v.field]
    assert violation.field == 'workflow["1"].inputs.image'


def test_directory_sink_continues_counters(
    tmp_path: Path, ref_dir: Path, input_store: DirectoryInputStore
) -> None:
    sink = DirectoryOutputSink(tmp_path / "out", tmp_path / "temp")
    workflow = _workflow(ref_dir, "r01_invert")
    NativeEngine(native_device()).run(workflow, input_store, sink)
    NativeEngine(native_device()).run(workflow, input_store, sink)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "r01_00001_.png",
        "r01_00002_.png",
    ]


def test_extra_pnginfo_and_object_info(ref_dir: Path, input_store: DirectoryInputStore) -> None:
    engine = NativeEngine(native_device())
    sink = MemoryOutputSink()
    engine.run(
        _workflow(ref_dir, "a_tiny"),
        MemoryInputStore(),
        sink,
        extra_pnginfo={"workflow": {"nodes": []}},
    )
    info = Image.open(io.BytesIO(sink.files[0].data)).info
    assert json.loads(info["workflow"]) == {"nodes": []}
    assert json.loads(info["prompt"])["1"]["class_type"] == "EmptyImage"
    listing = engine.object_info(input_store)
    assert listing["LoadImage"]["input"]["required"]["image"][0] == ["alpha.png", "shapes.png"]


def test_c_latent(ref_dir: Path, engine: NativeEngine) -> None:
    sink = MemoryOutputSink()
    result = engine.run(_workflow(ref_dir, "c_latent"), MemoryInputStore(), sink)
    assert result.status is RunStatus.SUCCEEDED
    [file] = sink.files
    assert (file.filename, file.subfolder) == ("bench_c_00001_.latent", "latents")
    tensors = safetensors.torch.load(file.data)
    assert tensors["latent_tensor"].shape == (2, 4, 96, 96)
    assert tensors["latent_format_version_0"].shape == (0,)


def test_fresh_outputs_rerun_output_nodes_only(ref_dir: Path, engine: NativeEngine) -> None:
    workflow = _workflow(ref_dir, "a_tiny")
    engine.run(workflow, MemoryInputStore(), MemoryOutputSink())
    sink = MemoryOutputSink()
    result = engine.run(workflow, MemoryInputStore(), sink, fresh_outputs=True)
    assert sorted(result.cached_nodes) == ["1", "2"]
    assert result.executed_nodes == ("3",)
    assert [f.filename for f in sink.files] == ["bench_a_00001_.png"]
    assert not result.outputs[0].cached


def test_progress_events_for_saved_images(ref_dir: Path, engine: NativeEngine) -> None:
    events: list[ExecutionEvent] = []
    engine.run(
        _workflow(ref_dir, "b_medium"),
        MemoryInputStore(),
        MemoryOutputSink(),
        on_progress=events.append,
    )
    progress = [(e.value, e.max) for e in events if isinstance(e, NodeProgress)]
    assert progress == [(1, 4), (2, 4), (3, 4), (4, 4)]


def test_changed_input_file_invalidates_the_loader(ref_dir: Path, engine: NativeEngine) -> None:
    shapes = (ref_dir / "inputs" / "shapes.png").read_bytes()
    store = MemoryInputStore({"shapes.png": shapes})
    workflow = _workflow(ref_dir, "r01_invert")
    engine.run(workflow, store, MemoryOutputSink())
    assert sorted(engine.run(workflow, store, MemoryOutputSink()).cached_nodes) == ["1", "2", "3"]
    store.files["shapes.png"] = (ref_dir / "inputs" / "alpha.png").read_bytes()
    sink = MemoryOutputSink()
    result = engine.run(workflow, store, sink)
    assert result.cached_nodes == ()
    assert Image.open(io.BytesIO(sink.files[0].data)).size == (128, 128)


def test_run_reuses_an_earlier_validation(ref_dir: Path, engine: NativeEngine) -> None:
    workflow = _workflow(ref_dir, "a_tiny")
    validation = engine.validate(workflow)
    result = engine.run(workflow, MemoryInputStore(), MemoryOutputSink(), validated=validation)
    assert result.status is RunStatus.SUCCEEDED and result.validation is validation
