"""Animated PNG and WEBP outputs are valid multi-frame files carrying the prompt as ComfyUI does."""

from __future__ import annotations

import io
import json
from typing import Any

from PIL import Image, ImageSequence

from comfyfleet.workflow.io import MemoryInputStore, MemoryOutputSink, OutputFile
from comfyfleet.workflow.runner import RunResult, RunStatus
from services.executor.native import NativeEngine
from tests.engine.devices import native_device

RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)


def node(class_type: str, **inputs: Any) -> dict[str, Any]:
    return {"class_type": class_type, "inputs": inputs}


def three_frames(saver: dict[str, Any]) -> dict[str, Any]:
    """Red, green and blue 16x12 frames batched into one IMAGE and handed to ``saver``."""
    return {
        "r": node("EmptyImage", width=16, height=12, batch_size=1, color=0xFF0000),
        "g": node("EmptyImage", width=16, height=12, batch_size=1, color=0x00FF00),
        "b": node("EmptyImage", width=16, height=12, batch_size=1, color=0x0000FF),
        "rg": node("ImageBatch", image1=["r", 0], image2=["g", 0]),
        "rgb": node("ImageBatch", image1=["rg", 0], image2=["b", 0]),
        "save": saver,
    }


def run(workflow: dict[str, Any]) -> tuple[RunResult, OutputFile]:
    sink = MemoryOutputSink()
    extra = {"workflow": {"nodes": [1, 2]}}
    result = NativeEngine(native_device()).run(
        workflow, MemoryInputStore(), sink, extra_pnginfo=extra
    )
    assert result.status is RunStatus.SUCCEEDED, result.error
    [file] = sink.files
    return result, file


def frame_colours(image: Image.Image) -> list[tuple[int, ...]]:
    colours = []
    for frame in ImageSequence.Iterator(image):
        pixel = frame.convert("RGB").getpixel((5, 5))
        assert isinstance(pixel, tuple)
        colours.append(pixel)
    return colours


def png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    """Every (type, payload) chunk of a PNG file, in file order."""
    chunks, offset = [], 8
    while offset < len(data):
        length = int.from_bytes(data[offset : offset + 4], "big")
        kind = data[offset + 4 : offset + 8]
        chunks.append((kind, data[offset + 8 : offset + 8 + length]))
        offset += 12 + length
    return chunks


def test_save_animated_png_writes_an_apng_with_every_frame_and_the_prompt() -> None:
    saver = node("SaveAnimatedPNG", images=["rgb", 0], filename_prefix="anim", fps=4.0)
    saver["inputs"]["compress_level"] = 4
    result, file = run(three_frames(saver))

    image = Image.open(io.BytesIO(file.data))
    assert (file.filename, file.content_type) == ("anim_00001_.png", "image/apng")
    assert image.format == "PNG" and getattr(image, "is_animated", False)
    assert getattr(image, "n_frames", 1) == 3
    assert image.size == (16, 12)
    assert frame_colours(image) == [RED, GREEN, BLUE]
    assert image.info["duration"] == 250  # int(1000 / fps)
    # ComfyUI stores the prompt and extra_pnginfo as private "comf" chunks after the frames.
    kinds = [kind for kind, _ in png_chunks(file.data)]
    assert kinds.count(b"fcTL") == 3 and kinds[-1] == b"IEND"
    comf = dict(
        payload.split(b"\0", 1) for kind, payload in png_chunks(file.data) if kind == b"comf"
    )
    assert json.loads(comf[b"prompt"])["save"]["class_type"] == "SaveAnimatedPNG"
    assert json.loads(comf[b"workflow"]) == {"nodes": [1, 2]}
    assert kinds.index(b"comf") > max(i for i, k in enumerate(kinds) if k in (b"IDAT", b"fdAT"))
    assert result.ui["save"]["animated"] == [True]


def test_save_animated_webp_writes_every_frame_and_the_prompt_in_exif() -> None:
    saver = node(
        "SaveAnimatedWEBP",
        images=["rgb", 0],
        filename_prefix="anim",
        fps=5.0,
        lossless=True,
        quality=80,
        method="default",
    )
    result, file = run(three_frames(saver))

    image = Image.open(io.BytesIO(file.data))
    assert (file.filename, file.content_type) == ("anim_00001_.webp", "image/webp")
    assert image.format == "WEBP" and getattr(image, "is_animated", False)
    assert getattr(image, "n_frames", 1) == 3
    assert frame_colours(image) == [RED, GREEN, BLUE]
    assert image.info["duration"] == 200
    exif = image.getexif()
    assert exif[0x0110].startswith("prompt:")
    assert json.loads(exif[0x0110].removeprefix("prompt:"))["save"]["inputs"]["fps"] == 5.0
    assert exif[0x010F] == 'workflow:{"nodes": [1, 2]}'
    assert result.ui["save"]["animated"] == [True]


def test_a_single_frame_webp_is_not_reported_animated() -> None:
    workflow = {
        "r": node("EmptyImage", width=8, height=8, batch_size=1, color=0xFF0000),
        "save": node(
            "SaveAnimatedWEBP",
            images=["r", 0],
            filename_prefix="still",
            fps=6.0,
            lossless=False,
            quality=90,
            method="fastest",
        ),
    }
    result, file = run(workflow)

    image = Image.open(io.BytesIO(file.data))
    assert getattr(image, "n_frames", 1) == 1
    assert result.ui["save"]["animated"] == [False]
