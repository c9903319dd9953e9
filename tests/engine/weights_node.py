"""A test-only node that needs model weights, the way a checkpoint or LoRA node would.

``ScaleByModel`` multiplies an image by the ``scale`` tensor of the model it names, taking the
model's weights from the run's context (never from a file), and records what it saw.
"""

from __future__ import annotations

import hashlib
from typing import Any

import safetensors.torch
import torch

from comfyfleet.workflow.runner import NodeContext, NodeDefinition, NodeRegistry
from comfyfleet.workflow.specs import InputSpec, NodeSpec, OutputSpec
from services.executor.native.nodes.base import model_weights, weights_fingerprint
from services.executor.native.registry import native_definitions

FOLDER = "checkpoints"

SPEC = NodeSpec(
    name="ScaleByModel",
    category="testing",
    inputs=(InputSpec("image", "IMAGE"), InputSpec("model_name", "STRING", default="")),
    outputs=(OutputSpec("IMAGE", "IMAGE"),),
)


class ScaleByModel:
    """The node's implementation; ``seen`` holds the ``scale`` tensor of every call."""

    def __init__(self) -> None:
        self.seen: list[torch.Tensor] = []

    def __call__(self, ctx: NodeContext, image: torch.Tensor, model_name: str) -> Any:
        scale = model_weights(ctx, FOLDER, model_name).tensors["scale"]
        self.seen.append(scale)
        return ((image * scale.to(image.device)).clamp(0, 1),)

    def registry(self) -> NodeRegistry:
        """Every native node plus this one."""
        fingerprint = weights_fingerprint(FOLDER, "model_name")
        mine = NodeDefinition(SPEC, self, fingerprint=fingerprint)
        return NodeRegistry([*native_definitions(), mine])


def scale_model(scale: float) -> tuple[str, bytes]:
    """A safetensors model with one ``scale`` tensor: (sha256, file bytes)."""
    data = safetensors.torch.save({"scale": torch.tensor(scale)})
    return hashlib.sha256(data).hexdigest(), data


def scaled_white_workflow(model_name: str, prefix: str = "scaled") -> dict[str, Any]:
    """A white 8x8 image scaled by the model's ``scale``, saved as a PNG."""
    return {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0xFFFFFF},
        },
        "2": {
            "class_type": "ScaleByModel",
            "inputs": {"image": ["1", 0], "model_name": model_name},
        },
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": prefix}},
    }
