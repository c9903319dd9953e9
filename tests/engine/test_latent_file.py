"""``.latent`` outputs are ComfyUI's files byte for byte, and load back as they were saved."""

from __future__ import annotations

import json
from pathlib import Path

import safetensors.torch
import torch

from comfyfleet.workflow.io import DirectoryInputStore, MemoryInputStore, MemoryOutputSink
from comfyfleet.workflow.runner import RunStatus
from services.executor.native import NativeEngine


def test_r08_writes_the_very_bytes_comfyui_wrote(
    ref_dir: Path, input_store: DirectoryInputStore, engine: NativeEngine
) -> None:
    workflow = json.loads((ref_dir / "workflows" / "r08_latent.json").read_text())
    sink = MemoryOutputSink()

    result = engine.run(workflow, input_store, sink)

    assert result.status is RunStatus.SUCCEEDED
    [file] = sink.files
    reference = ref_dir / "reference" / "r08_latent" / "node4_latents_0.latent"
    # Same header (tensor names, dtypes, shapes, offsets, the prompt in __metadata__) and data.
    assert file.data == reference.read_bytes()


def test_a_latent_goes_through_load_and_save_unchanged(engine: NativeEngine) -> None:
    samples = torch.randn(2, 4, 6, 10)
    original = safetensors.torch.save(
        {"latent_tensor": samples, "latent_format_version_0": torch.tensor([])}
    )
    workflow = {
        "1": {"class_type": "LoadLatent", "inputs": {"latent": "in.latent"}},
        "2": {"class_type": "LatentMultiply", "inputs": {"samples": ["1", 0], "multiplier": 2.0}},
        "3": {"class_type": "SaveLatent", "inputs": {"samples": ["2", 0], "filename_prefix": "x"}},
    }
    sink = MemoryOutputSink()

    result = engine.run(workflow, MemoryInputStore({"in.latent": original}), sink)

    assert result.status is RunStatus.SUCCEEDED, result.error
    [file] = sink.files
    assert (file.subfolder, file.filename, file.type) == ("", "x_00001_.latent", "output")
    saved = safetensors.torch.load(file.data)
    assert set(saved) == {"latent_tensor", "latent_format_version_0"}
    assert torch.equal(saved["latent_tensor"], samples * 2)
    assert result.ui["3"]["latents"] == [
        {"filename": "x_00001_.latent", "subfolder": "", "type": "output"}
    ]
