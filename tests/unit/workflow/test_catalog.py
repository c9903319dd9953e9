"""The declared catalog equals ComfyUI's /object_info for every node type."""

from __future__ import annotations

from typing import Any

import pytest

from comfyfleet.workflow.catalog import NATIVE_CATALOG
from comfyfleet.workflow.specs import InputSpec, NodeCatalog, NodeSpec, Section
from tests.unit.workflow.refdata import load_json

OBJECT_INFO: dict[str, Any] = load_json("object_info.json")


def test_catalog_has_every_reference_node() -> None:
    assert set(NATIVE_CATALOG) == set(OBJECT_INFO)


@pytest.mark.parametrize("name", sorted(OBJECT_INFO))
def test_node_renders_like_comfyui(name: str) -> None:
    assert NATIVE_CATALOG[name].render() == OBJECT_INFO[name]


def test_object_info_lists_store_files_for_loaders() -> None:
    body = NATIVE_CATALOG.subset(["LoadImage", "ImageInvert"]).object_info(
        lambda spec, ispec: ["a.png", "b.png"]
    )
    assert body["LoadImage"]["input"]["required"]["image"] == [
        ["a.png", "b.png"],
        {"image_upload": True},
    ]
    assert body["ImageInvert"] == OBJECT_INFO["ImageInvert"]


def test_typed_fields() -> None:
    scale_by = NATIVE_CATALOG["ImageScaleBy"].input("scale_by")
    assert scale_by is not None
    assert (scale_by.type, scale_by.default, scale_by.min, scale_by.max, scale_by.step) == (
        "FLOAT",
        1.0,
        0.01,
        8.0,
        0.01,
    )
    method = NATIVE_CATALOG["ImageScaleBy"].input("upscale_method")
    assert method is not None and method.is_combo and "lanczos" in (method.choices or ())
    save = NATIVE_CATALOG["SaveImage"]
    assert save.output_node and save.return_types == ()
    assert [i.name for i in save.hidden_inputs()] == ["prompt", "extra_pnginfo"]
    assert NATIVE_CATALOG["GetImageSize"].return_types == ("INT", "INT", "INT")


def test_new_style_combo_renders_options() -> None:
    spec = InputSpec("mode", "COMBO", choices=("a", "b"), default="a")
    assert spec.config() == ["COMBO", {"options": ["a", "b"], "default": "a"}]
    legacy = InputSpec("mode", "COMBO", choices=("a", "b"), legacy_combo=True, bare=True)
    assert legacy.config() == [["a", "b"]]
    assert legacy.error_config() == [["a", "b"], {}]


def test_catalog_rejects_duplicates() -> None:
    spec = NodeSpec("X", "test", (InputSpec("a", "INT", section=Section.OPTIONAL),))
    with pytest.raises(ValueError):
        NodeCatalog([spec, spec])
    with pytest.raises(ValueError):
        NodeSpec("Y", "test", (InputSpec("a", "INT"), InputSpec("a", "INT")))
