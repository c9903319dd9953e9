"""Model kinds, proto enum values and ComfyUI folders stay in step."""

from __future__ import annotations

import pytest

from comfyfleet.models.v1 import models_pb2
from services.models.kinds import FOLDER_OF_KIND, KINDS
from services.models.references import KIND_BY_INPUT, KIND_BY_NODE_INPUT
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
    assert set(KIND_BY_INPUT.values()) | set(KIND_BY_NODE_INPUT.values()) <= KINDS


def test_folders() -> None:
    assert FOLDER_OF_KIND["checkpoint"] == "checkpoints"
    assert FOLDER_OF_KIND["lora"] == "loras"
    assert FOLDER_OF_KIND["upscale"] == "upscale_models"
