"""Every reference workflow gives what a real ComfyUI gave (pixels within 1/255)."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import safetensors.torch
import torch
from PIL import Image

from comfyfleet.workflow.io import DirectoryInputStore, MemoryOutputSink, OutputFile
from comfyfleet.workflow.runner import RunStatus
from services.executor.native import NativeEngine

REFERENCE_WORKFLOWS = [
    "r01_invert",
    "r02_blur_scale",
    "r03_scale_crop_center",
    "r04_sharpen_flip",
    "r05_composite_feathered",
    "r06_crop_rotate",
    "r07_blend_multiply",
    "r08_latent",
    "r09_batch",
    "r10_pad_outpaint_mask",
]


def _expected_files(result: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    by_node: dict[str, list[dict[str, Any]]] = {}
    for entry in result["files"]:
        by_node.setdefault(entry["node"], []).append(entry)
    for entries in by_node.values():
        entries.sort(key=lambda e: int(Path(e["file"]).stem.rsplit("_", 1)[1]))
    return by_node


def _assert_png_matches(got: OutputFile, ref_path: Path, entry: dict[str, Any]) -> None:
    image = Image.open(io.BytesIO(got.data))
    reference = Image.open(ref_path)
    assert list(image.size) == entry["size"]
    assert image.mode == entry["mode"]
    ours = np.asarray(image).astype(np.int16)
    theirs = np.asarray(reference).astype(np.int16)
    assert ours.shape == theirs.shape
    worst = int(np.abs(ours - theirs).max())
    assert worst <= 1, f"{got.filename}: pixels differ by up to {worst}/255"
    assert json.loads(image.info["prompt"]) == json.loads(reference.info["prompt"])


def _assert_latent_matches(got: OutputFile, ref_path: Path) -> None:
    ours = safetensors.torch.load(got.data)
    theirs = safetensors.torch.load_file(str(ref_path))
    assert set(ours) == set(theirs)
    for key, tensor in theirs.items():
        assert ours[key].shape == tensor.shape and ours[key].dtype == tensor.dtype
        torch.testing.assert_close(ours[key], tensor, atol=1e-6, rtol=1e-5)
    assert _latent_prompt(got.data) == _latent_prompt(ref_path.read_bytes())


def _latent_prompt(data: bytes) -> Any:
    """The prompt stored in a ``.latent`` file's safetensors metadata."""
    size = int.from_bytes(data[:8], "little")
    return json.loads(json.loads(data[8 : 8 + size])["__metadata__"]["prompt"])


@pytest.mark.parametrize("name", REFERENCE_WORKFLOWS)
def test_reference_workflow(
    name: str, ref_dir: Path, input_store: DirectoryInputStore, engine: NativeEngine
) -> None:
    workflow = json.loads((ref_dir / "workflows" / f"{name}.json").read_text())
    sink = MemoryOutputSink()
    result = engine.run(workflow, input_store, sink)
    assert result.status is RunStatus.SUCCEEDED, result.error
    expected = _expected_files(
        json.loads((ref_dir / "reference" / name / "result.json").read_text())
    )
    produced: dict[str, list[OutputFile]] = {}
    for file in sink.files:
        produced.setdefault(file.node_id, []).append(file)
    assert {k: len(v) for k, v in produced.items()} == {k: len(v) for k, v in expected.items()}
    for node_id, entries in expected.items():
        for got, entry in zip(produced[node_id], entries, strict=True):
            ref_path = ref_dir / "reference" / name / entry["file"]
            if entry["kind"] == "latents":
                _assert_latent_matches(got, ref_path)
            else:
                _assert_png_matches(got, ref_path, entry)
