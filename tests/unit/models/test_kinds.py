"""Model kinds, proto enum values and ComfyUI folders stay in step."""

from __future__ import annotations

import pytest

from comfyfleet.models.v1 import models_pb2
from comfyfleet.workflow.modelfiles import FOLDER_BY_INPUT, FOLDER_BY_NODE_INPUT
from services.models.kinds import FOLDER_OF_KIND, KINDS
from services.models.references import kind_of_input
from services.models.servicer import kind_of_type, type_of_kind


def test_every_proto_type_has_a_kind_and_back() -> None:
    types = [v for v in models_pb2.ModelType.values() if v != models_pb2.MODEL_TYPE_UNSPECIFIED]
    assert {kind_of_type(t) for t in types} == KINDS
    for t in types:
        assert type_of_kind(kind_of_type(t)) == t


@pytest.mark.parametrize("value", [models_pb2.MODEL_TYPE_UNSPECIFIED, 999])
def test_unspecified_and_unknown_types_have_no_kind(value: int) -> None:
    assert kind_of_type(value) == ""


def test_every_reference_kind_is_a_registry_kind() -> None:
    inputs = [("AnyNode", name) for name in FOLDER_BY_INPUT] + list(FOLDER_BY_NODE_INPUT)
    kinds = {kind_of_input(node, name) for node, name in inputs} - {None}
    assert kinds == KINDS - {"embedding"}


@pytest.mark.parametrize(
    ("node", "name", "kind"),
    [
        ("CheckpointLoaderSimple", "ckpt_name", "checkpoint"),
        ("MyCustomLoader", "lora_name", "lora"),
        ("UpscaleModelLoader", "model_name", "upscale"),
        ("CLIPLoader", "clip_name", "text_encoder"),
        ("CLIPVisionLoader", "clip_name", "clip_vision"),
        ("MyCustomLoader", "model_name", None),
        ("StyleModelLoader", "style_model_name", None),  # a folder the registry does not hold
    ],
)
def test_kinds_of_inputs(node: str, name: str, kind: str | None) -> None:
    assert kind_of_input(node, name) == kind


def test_folders() -> None:
    assert FOLDER_OF_KIND["checkpoint"] == "checkpoints"
    assert FOLDER_OF_KIND["lora"] == "loras"
    assert FOLDER_OF_KIND["upscale"] == "upscale_models"
