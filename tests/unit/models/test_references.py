"""Which node inputs of a workflow name which kind of model."""

from __future__ import annotations

import json

import pytest

from comfyfleet.common.errors import InvalidArgument
from services.models.references import ModelReference, find_references


def refs_of(workflow: dict) -> list[tuple[str, str, str, str]]:
    return [
        (r.node_id, r.input_name, r.name, r.kind) for r in find_references(json.dumps(workflow))
    ]


def node(class_type: str, **inputs: object) -> dict:
    return {"class_type": class_type, "inputs": inputs}


def test_sd_workflow_references() -> None:
    workflow = {
        "4": node("CheckpointLoaderSimple", ckpt_name="sd15.safetensors"),
        "10": node("LoraLoader", lora_name="style.safetensors", model=["4", 0], clip=["4", 1]),
        "11": node("VAELoader", vae_name="vae-ft-mse.safetensors"),
        "12": node("ControlNetLoader", control_net_name="canny.safetensors"),
        "13": node("UpscaleModelLoader", model_name="4x.safetensors"),
        "3": node("KSampler", seed=1, model=["10", 0]),
    }
    assert refs_of(workflow) == [
        ("4", "ckpt_name", "sd15.safetensors", "checkpoint"),
        ("10", "lora_name", "style.safetensors", "lora"),
        ("11", "vae_name", "vae-ft-mse.safetensors", "vae"),
        ("12", "control_net_name", "canny.safetensors", "controlnet"),
        ("13", "model_name", "4x.safetensors", "upscale"),
    ]


def test_flux_workflow_references() -> None:
    workflow = {
        "1": node("UNETLoader", unet_name="flux1-dev.safetensors", weight_dtype="fp8_e4m3fn"),
        "2": node(
            "DualCLIPLoader",
            clip_name1="t5xxl.safetensors",
            clip_name2="clip_l.safetensors",
            type="flux",
        ),
        "3": node("CLIPVisionLoader", clip_name="clip_vision_g.safetensors"),
        "4": node("CLIPLoader", clip_name="t5.safetensors", type="sd3"),
    }
    assert refs_of(workflow) == [
        ("1", "unet_name", "flux1-dev.safetensors", "diffusion_model"),
        ("2", "clip_name1", "t5xxl.safetensors", "text_encoder"),
        ("2", "clip_name2", "clip_l.safetensors", "text_encoder"),
        ("3", "clip_name", "clip_vision_g.safetensors", "clip_vision"),
        ("4", "clip_name", "t5.safetensors", "text_encoder"),
    ]


def test_custom_nodes_with_standard_input_names_are_found() -> None:
    workflow = {"7": node("Efficient Loader", ckpt_name="a.safetensors", lora_name="None")}
    assert [(r[1], r[3]) for r in refs_of(workflow)] == [
        ("ckpt_name", "checkpoint"),
        ("lora_name", "lora"),
    ]


def test_model_name_of_other_nodes_is_not_an_upscaler() -> None:
    assert refs_of({"1": node("SomeCustomNode", model_name="gpt-4")}) == []


def test_links_are_not_names() -> None:
    assert refs_of({"1": node("LoraLoader", lora_name=["5", 0])}) == []


def test_a_workflow_without_models() -> None:
    assert refs_of({"1": node("EmptyLatentImage", width=64, height=64, batch_size=1)}) == []
    assert refs_of({}) == []


def test_each_node_input_is_listed_even_when_the_model_repeats() -> None:
    workflow = {
        "1": node("CheckpointLoaderSimple", ckpt_name="a.safetensors"),
        "2": node("CheckpointLoaderSimple", ckpt_name="a.safetensors"),
    }
    assert [r[0] for r in refs_of(workflow)] == ["1", "2"]


def test_field_path() -> None:
    ref = ModelReference("12", "lora_name", "x.safetensors", "lora")
    assert ref.field == 'workflow["12"].inputs.lora_name'


@pytest.mark.parametrize("text", ["", "{", "not json", "[1, 2]", '"text"', "null"])
def test_malformed_workflow(text: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        find_references(text)
    assert [v.field for v in caught.value.violations] == ["workflow_json"]


def test_malformed_nodes_are_all_reported() -> None:
    workflow = {
        "1": "not a node",
        "2": {"inputs": {}},
        "3": {"class_type": "X", "inputs": [1]},
        "4": node("CheckpointLoaderSimple", ckpt_name="a.safetensors"),
    }
    with pytest.raises(InvalidArgument) as caught:
        find_references(json.dumps(workflow))
    assert [v.field for v in caught.value.violations] == [
        'workflow["1"]',
        'workflow["2"].class_type',
        'workflow["3"].inputs',
    ]


def test_values_beyond_the_workflow_limits_are_violations_naming_them() -> None:
    # The limits of CreateExecution hold here too: a name that is not text (a JSON "\ud800")
    # could not even be looked up in PostgreSQL.
    workflow = {
        "4": node("CheckpointLoaderSimple", ckpt_name="\ud800"),
        "5": node("LoraLoader", lora_name="a\x00b", strength_model=float("nan")),
    }
    with pytest.raises(InvalidArgument) as caught:
        find_references(json.dumps(workflow))
    assert [(v.field, v.reason) for v in caught.value.violations] == [
        ('workflow["4"].inputs.ckpt_name', "INVALID_TEXT"),
        ('workflow["5"].inputs.lora_name', "INVALID_TEXT"),
        ('workflow["5"].inputs.strength_model', "NUMBER_NOT_FINITE"),
    ]
    assert caught.value.reason == "INVALID_WORKFLOW"
