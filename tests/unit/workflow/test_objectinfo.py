"""ComfyUI's /object_info as a typed catalog: lossless, and validating as that ComfyUI does."""

from __future__ import annotations

import copy
import gzip
import json
from typing import Any

import pytest

from comfyfleet.workflow.catalog import NATIVE_CATALOG
from comfyfleet.workflow.objectinfo import (
    ModelReference,
    ObjectInfoError,
    catalog_from_object_info,
    is_model_input,
    model_references,
    unlisted_model_file,
)
from comfyfleet.workflow.specs import Section
from comfyfleet.workflow.validate import ErrorType, validate_workflow
from tests.unit.workflow.refdata import comfyui_ref_dir, load_json

FULL: dict[str, Any] = json.loads(
    gzip.decompress(comfyui_ref_dir().joinpath("object_info_full.json.gz").read_bytes())
)
FULL_CATALOG = catalog_from_object_info(FULL)
FULL_INVALID: dict[str, Any] = load_json("object_info_full_invalid.json")
DIFFUSION = ("t01_txt2img", "t02_img2img", "t03_batch_ancestral")


def _workflow(name: str) -> dict[str, Any]:
    data: dict[str, Any] = load_json("workflows", f"{name}.json")
    return data


def _comparable(body: Any) -> Any:
    """Without tracebacks (they point into ComfyUI's source) and with each node's errors in
    one order (ComfyUI walks a node's inputs as a set)."""
    if isinstance(body, dict):
        out = {k: _comparable(v) for k, v in body.items() if k != "traceback"}
        if isinstance(out.get("errors"), list):
            out["errors"] = sorted(out["errors"], key=lambda e: json.dumps(e, sort_keys=True))
        return out
    if isinstance(body, list):
        return [_comparable(v) for v in body]
    return body


@pytest.mark.parametrize(
    "object_info",
    [NATIVE_CATALOG.object_info(), load_json("object_info.json"), FULL],
    ids=["native", "captured-86", "comfyui-0.3.64-full"],
)
def test_renders_back_to_the_same_object_info(object_info: dict[str, Any]) -> None:
    rendered = catalog_from_object_info(object_info).object_info()
    assert list(rendered) == list(object_info)
    for name, entry in object_info.items():
        assert rendered[name] == entry, name


def test_the_full_catalog_has_every_node_type() -> None:
    assert len(FULL_CATALOG) == 478
    assert {"KSampler", "CheckpointLoaderSimple", "CLIPTextEncode", "VAEDecode"} <= set(
        FULL_CATALOG
    )


def test_native_object_info_parses_to_the_native_specs() -> None:
    parsed = catalog_from_object_info(NATIVE_CATALOG.object_info())
    for name, spec in NATIVE_CATALOG.items():
        assert parsed[name] == spec, name


def test_input_shapes() -> None:
    ckpt = FULL_CATALOG["CheckpointLoaderSimple"].input("ckpt_name")
    assert ckpt is not None and ckpt.legacy_combo and ckpt.type == "COMBO"
    assert ckpt.choices == ("tiny-sd15.safetensors",)
    assert ckpt.extra == {"tooltip": "The name of the checkpoint (model) to load."}
    steps = FULL_CATALOG["KSampler"].input("steps")
    assert steps is not None and (steps.default, steps.min, steps.max) == (20, 1, 10000)
    mode = FULL_CATALOG["CaseConverter"].input("mode")
    assert mode is not None and not mode.legacy_combo and mode.choices
    assert "options" not in mode.extra and mode.extra["multiselect"] is False
    image = FULL_CATALOG["LoadImage"].input("image")
    assert image is not None and image.file_input
    assert FULL_CATALOG["LoadLatent"].input("latent").file_input  # type: ignore[union-attr]
    source = FULL_CATALOG["PreviewAny"].input("source")
    assert source is not None and source.type == "*"
    hidden = [i for i in FULL_CATALOG["SaveWEBM"].inputs if i.section is Section.HIDDEN]
    assert hidden and all(i.bare for i in hidden)  # ["PROMPT"]
    assert FULL_CATALOG["DisableNoise"].empty_sections == (Section.REQUIRED,)
    any_combo = FULL_CATALOG["LoadImageOutput"].input("image")
    assert any_combo is not None and any_combo.type == "COMBO" and any_combo.choices is None


def test_a_combo_output_type_round_trips_and_links_to_the_same_combo() -> None:
    choices = ["euler", "ddim"]
    info = {
        "PickSampler": {
            "input": {"required": {}},
            "input_order": {"required": []},
            "output": [choices],
            "output_is_list": [False],
            "output_name": ["sampler"],
            "name": "PickSampler",
            "display_name": "Pick",
            "description": "",
            "python_module": "custom_nodes.pick",
            "category": "utils",
            "output_node": False,
        },
        "UseSampler": {
            "input": {"required": {"name": [choices], "other": [["x"]]}},
            "input_order": {"required": ["name", "other"]},
            "output": [],
            "output_is_list": [],
            "output_name": [],
            "name": "UseSampler",
            "display_name": "Use",
            "description": "",
            "python_module": "custom_nodes.pick",
            "category": "utils",
            "output_node": True,
        },
    }
    catalog = catalog_from_object_info(info)
    assert catalog.object_info() == info
    ok = {
        "1": {"class_type": "PickSampler", "inputs": {}},
        "2": {"class_type": "UseSampler", "inputs": {"name": ["1", 0], "other": "x"}},
    }
    assert validate_workflow(ok, catalog).ok
    bad = copy.deepcopy(ok)
    bad["2"]["inputs"] = {"name": "euler", "other": ["1", 0]}
    result = validate_workflow(bad, catalog)
    assert [i.type for i in result.issues][1:] == [ErrorType.RETURN_TYPE_MISMATCH.value]


@pytest.mark.parametrize(
    "object_info",
    [
        [],
        {"X": []},
        {"X": {"input": {"required": {"a": "INT"}}}},
        {"X": {"input": {"required": {"a": ["INT", {}, {}]}}}},
        {"X": {"input": {"required": {"a": ["INT", "opts"]}}}},
        {"X": {"input": {"hidden": {"a": ["A", {}]}}}},
        {"X": {"input": {"sometimes": {}}}},
        {"X": {"name": "Y", "input": {}}},
        {"X": {"input": {}, "output": ["A"], "output_name": []}},
    ],
)
def test_refuses_what_comfyui_never_gives(object_info: Any) -> None:
    with pytest.raises(ObjectInfoError):
        catalog_from_object_info(object_info)


@pytest.mark.parametrize("name", DIFFUSION)
def test_diffusion_workflows_validate_cleanly(name: str) -> None:
    result = validate_workflow(_workflow(name), FULL_CATALOG)
    assert result.ok and not result.node_errors, result.issues


@pytest.mark.parametrize("name", DIFFUSION)
def test_diffusion_workflows_are_refused_on_native(name: str) -> None:
    result = validate_workflow(_workflow(name), NATIVE_CATALOG)
    assert result.error is not None and result.error.type == ErrorType.INVALID_PROMPT.value
    assert "does not exist" in result.error.message


@pytest.mark.parametrize("case", sorted(FULL_INVALID))
def test_answers_what_that_comfyui_answered(case: str) -> None:
    captured = FULL_INVALID[case]
    result = validate_workflow(captured["workflow"], FULL_CATALOG)
    assert result.ok == (captured["response"]["status"] == 200)
    assert _comparable(result.comfy_body()) == _comparable(captured["response"]["body"])


def test_model_inputs_are_decided_from_the_catalog() -> None:
    found = {
        (spec.name, i.name)
        for spec in FULL_CATALOG.values()
        for i in spec.visible_inputs()
        if is_model_input(spec, i)
    }
    assert {
        ("CheckpointLoaderSimple", "ckpt_name"),  # choices end with .safetensors
        ("LoraLoader", "lora_name"),  # no LoRA yet: empty choices on a loader
        ("UNETLoader", "unet_name"),
        ("UpscaleModelLoader", "model_name"),
        ("CreateHookLora", "lora_name"),  # not a loader category: a standard loader input
    } <= found
    assert ("CheckpointLoader", "config_name") not in found  # .yaml choices
    assert ("LoadImage", "image") not in found  # the job's input files
    assert ("KSampler", "sampler_name") not in found


def test_model_references_are_the_unlisted_model_files() -> None:
    wf = _workflow("t01_txt2img")
    assert model_references(wf, FULL_CATALOG) == []  # the environment carries it
    wf["4"]["inputs"]["ckpt_name"] = "mine.safetensors"
    wf["20"] = {
        "class_type": "LoraLoader",
        "inputs": {
            "model": ["4", 0],
            "clip": ["4", 1],
            "lora_name": "style.safetensors",
            "strength_model": 1.0,
            "strength_clip": 1.0,
        },
    }
    wf["21"] = {"class_type": "ModelPatchLoader", "inputs": {"name": "patch.safetensors"}}
    wf["22"] = {"class_type": "DiffusersLoader", "inputs": {"model_path": "a/b.bin"}}
    wf["23"] = {"class_type": "NoSuchNode", "inputs": {"ckpt_name": "x.safetensors"}}
    assert model_references(json.dumps(wf), FULL) == [
        ModelReference("4", "ckpt_name", "mine.safetensors", "checkpoints"),
        ModelReference("20", "lora_name", "style.safetensors", "loras"),
        ModelReference("21", "name", "patch.safetensors", "model_patches"),
        ModelReference("22", "model_path", "a/b.bin", None),
    ]
    assert model_references(wf, FULL_CATALOG)[0].field == 'workflow["4"].inputs.ckpt_name'


def test_unlisted_model_files_are_left_to_the_registry_by_the_hook() -> None:
    wf = _workflow("t01_txt2img")
    wf["4"]["inputs"]["ckpt_name"] = "mine.safetensors"
    strict = validate_workflow(wf, FULL_CATALOG)
    assert [i.type for i in strict.issues] == [
        ErrorType.PROMPT_OUTPUTS_FAILED_VALIDATION.value,
        ErrorType.VALUE_NOT_IN_LIST.value,
    ]
    assert validate_workflow(wf, FULL_CATALOG, unlisted_ok=unlisted_model_file).ok
    wf["3"]["inputs"]["sampler_name"] = "mine.safetensors"  # not a model input
    hooked = validate_workflow(wf, FULL_CATALOG, unlisted_ok=unlisted_model_file)
    assert [i.field for i in hooked.issues][1:] == ['workflow["3"].inputs.sampler_name']


def test_a_folder_picked_from_an_empty_loader_list_is_not_a_model() -> None:
    spec = FULL_CATALOG["LoadImageSetFromFolderNode"]
    folder = spec.input("folder")
    assert folder is not None and is_model_input(spec, folder)
    assert not unlisted_model_file(spec, folder, "my_images")
    assert unlisted_model_file(spec, folder, "weights.safetensors")
    assert not unlisted_model_file(spec, folder, "")
