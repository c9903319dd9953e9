"""The native engine checks allocations whose size comes through links, and input images'
decoded size, before making them: the node fails as a workflow error, the engine runs on."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from PIL import Image

from comfyfleet.workflow.budget import MIB, BudgetExceeded
from comfyfleet.workflow.io import MemoryInputStore, MemoryOutputSink
from comfyfleet.workflow.runner import RunResult, RunStatus
from services.executor.native import NativeEngine
from services.executor.native.memory import MemoryGuard, check_allocation, guarding
from tests.engine.devices import native_device


def png(size: tuple[int, int], mode: str = "RGB") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def animated(frames: int, size: tuple[int, int]) -> bytes:
    buffer = io.BytesIO()
    images = [Image.new("RGB", size, (n, n, n)) for n in range(frames)]
    images[0].save(buffer, format="PNG", save_all=True, append_images=images[1:])
    return buffer.getvalue()


INPUTS = MemoryInputStore(
    {
        "small.png": png((64, 64)),
        "bomb.png": png((10000, 10000), "1"),
        "huge.png": png((20000, 20000), "1"),
        "frames.png": animated(40, (256, 256)),
    }
)


def node(class_type: str, **inputs: Any) -> dict[str, Any]:
    return {"class_type": class_type, "inputs": inputs}


def exploding(amount: int) -> dict[str, Any]:
    """Sizes no one can know before running: they come from the loaded image."""
    return {
        "1": node("LoadImage", image="small.png"),
        "2": node("RepeatImageBatch", image=["1", 0], amount=amount),
        "3": node("ImageScaleBy", image=["2", 0], upscale_method="nearest-exact", scale_by=8.0),
        "4": node("SaveImage", images=["3", 0], filename_prefix="x"),
    }


def loads(name: str, class_type: str = "LoadImage", **extra: Any) -> dict[str, Any]:
    """``class_type`` loads input ``name``, whose pixels are saved."""
    pixels = (
        node("MaskToImage", mask=["1", 0])
        if class_type == "LoadImageMask"
        else node("ImageInvert", image=["1", 0])
    )
    return {
        "1": node(class_type, image=name, **extra),
        "2": pixels,
        "3": node("SaveImage", images=["2", 0], filename_prefix="x"),
    }


def run(engine: NativeEngine, graph: dict[str, Any]) -> RunResult:
    return engine.run(json.dumps(graph), INPUTS, MemoryOutputSink())


@pytest.fixture
def engine() -> NativeEngine:
    return NativeEngine(native_device(), memory=MemoryGuard(budget_bytes=64 * MIB))


def test_a_linked_size_beyond_the_budget_fails_its_node_and_the_engine_runs_on(
    engine: NativeEngine,
) -> None:
    failed = run(engine, exploding(amount=64))

    assert failed.status == RunStatus.FAILED and failed.error is not None
    assert (failed.error.node_id, failed.error.class_type) == ("3", "ImageScaleBy")
    assert failed.error.exception_type == "comfyfleet.workflow.budget.BudgetExceeded"
    assert failed.error.exception_message == (
        "a [64, 3, 512, 512] tensor (192 MiB) would exceed this executor's memory budget"
        " of 64 MiB for one allocation"
    )
    assert run(engine, exploding(amount=2)).status == RunStatus.SUCCEEDED


def test_a_decompression_bomb_fails_naming_the_input_before_it_is_decoded(
    engine: NativeEngine,
) -> None:
    for class_type, extra in (("LoadImage", {}), ("LoadImageMask", {"channel": "red"})):
        failed = run(engine, loads("bomb.png", class_type, **extra))

        assert failed.status == RunStatus.FAILED and failed.error is not None
        assert failed.error.node_id == "1"
        assert failed.error.exception_type == "comfyfleet.workflow.budget.InputImageTooLarge"
        assert failed.error.exception_message == (
            "the input image 'bomb.png' is 10000x10000 pixels (100 megapixels) once decoded;"
            " at most 67.1 megapixels are taken"
        )


def test_pillows_own_bomb_bound_fails_naming_the_input_too() -> None:
    lenient = NativeEngine(native_device(), memory=MemoryGuard(max_input_pixels=10**12))

    failed = run(lenient, loads("huge.png"))

    assert failed.error is not None
    assert failed.error.exception_type == "comfyfleet.workflow.budget.InputImageTooLarge"
    assert failed.error.exception_message.startswith(
        "the input image 'huge.png' is too large to decode: Image size (400000000 pixels)"
    )


def test_the_frames_of_an_animation_count_together(engine: NativeEngine) -> None:
    # 40 frames of 256 x 256, as RGB and mask floats: 40 MiB; within 64 MiB, not 16 MiB.
    assert run(engine, loads("frames.png")).status == RunStatus.SUCCEEDED
    tight = NativeEngine(native_device(), memory=MemoryGuard(budget_bytes=16 * MIB))

    failed = run(tight, loads("frames.png"))

    assert failed.error is not None and failed.error.node_id == "1"
    assert "[17, 256, 256, 4] tensor" in failed.error.exception_message


def test_allocations_beyond_the_free_memory_are_refused() -> None:
    guard = MemoryGuard(free_bytes=lambda: 10 * MIB)

    with guarding(guard):
        check_allocation((1, 1024, 1024, 2))
        with pytest.raises(BudgetExceeded, match="the 10 MiB of memory free"):
            check_allocation((1, 1024, 1024, 3))
    # Outside a run nothing is checked.
    check_allocation((1 << 40,))


def test_the_default_guard_checks_the_device_free_memory() -> None:
    engine = NativeEngine(native_device())
    graph = {
        "1": node("EmptyImage", width=16384, height=16384, batch_size=4096, color=0),
        "2": node("SaveImage", images=["1", 0], filename_prefix="x"),
    }

    failed = run(engine, graph)

    assert failed.error is not None
    assert failed.error.exception_type == "comfyfleet.workflow.budget.BudgetExceeded"
    assert "of memory free on the executor's device" in failed.error.exception_message


def test_a_resize_that_holds_intermediates_counts_them(engine: NativeEngine) -> None:
    graph = {
        "1": node("EmptyLatentImage", width=512, height=512, batch_size=16),
        "2": node("LatentUpscaleBy", samples=["1", 0], upscale_method="bislerp", scale_by=4.0),
        "3": node("SaveLatent", samples=["2", 0], filename_prefix="x"),
    }

    failed = run(engine, graph)

    # A 16 MiB latent, but bislerp's intermediates take sixteen times that.
    assert failed.error is not None and failed.error.node_id == "2"
    assert failed.error.exception_message.startswith(
        "a [16, 4, 256, 256] tensor (16 at once while it is computed) (256 MiB) would exceed"
    )
