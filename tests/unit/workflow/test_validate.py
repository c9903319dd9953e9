"""Validation matches ComfyUI's answers and reports every problem as typed results."""

from __future__ import annotations

import json
from typing import Any

import pytest

from comfyfleet.workflow.catalog import NATIVE_CATALOG
from comfyfleet.workflow.graph import Link
from comfyfleet.workflow.validate import ErrorType, validate_workflow
from tests.unit.workflow.refdata import load_json, workflow_text

RESPONSES: dict[str, Any] = load_json("invalid_responses.json")
CASES = sorted(
    name.removesuffix(".json")
    for name in RESPONSES
    if name.endswith(".json") and name != "invalid.json"
)


def _without_traceback(body: Any) -> Any:
    """ComfyUI's tracebacks point into its own source; they are not compared."""
    if isinstance(body, dict):
        return {k: _without_traceback(v) for k, v in body.items() if k != "traceback"}
    if isinstance(body, list):
        return [_without_traceback(v) for v in body]
    return body


@pytest.mark.parametrize("name", CASES)
def test_body_matches_comfyui(name: str) -> None:
    expected = RESPONSES[f"{name}.json"]
    result = validate_workflow(workflow_text(name), NATIVE_CATALOG)
    assert result.ok == (expected["status"] == 200)
    body = result.comfy_body()
    want = expected["body"]
    if result.ok:
        want = {"node_errors": want["node_errors"]}
    assert _without_traceback(body) == _without_traceback(want)


def _wf(**nodes: tuple[str, dict[str, Any]]) -> dict[str, Any]:
    return {k.removeprefix("n"): {"class_type": c, "inputs": i} for k, (c, i) in nodes.items()}


SAVE = {"images": ["1", 0], "filename_prefix": "x"}


def _empty(**overrides: Any) -> tuple[str, dict[str, Any]]:
    inputs = {"width": 64, "height": 64, "batch_size": 1, "color": 0} | overrides
    return ("EmptyImage", inputs)


def _errors(result: Any, node_id: str) -> list[str]:
    return [e.type for n in result.node_errors if n.node_id == node_id for e in n.errors]


def test_partial_valid_runs_only_good_outputs() -> None:
    result = validate_workflow(workflow_text("partial_valid"), NATIVE_CATALOG)
    assert result.ok and result.outputs == ("2",)
    [violation] = result.field_violations()
    assert violation.field == 'workflow["3"].inputs.image'
    assert "99" in violation.description


def test_field_violations_name_each_input() -> None:
    result = validate_workflow(workflow_text("invalid_multi_validation"), NATIVE_CATALOG)
    fields = {v.field: v.reason for v in result.field_violations()}
    assert fields == {
        'workflow["1"].inputs.width': "value_smaller_than_min",
        'workflow["2"].inputs.image': "exception_during_inner_validation",
        'workflow["4"].inputs.scale_by': "invalid_input_type",
        'workflow["4"].inputs.upscale_method': "value_not_in_list",
        'workflow["5"].inputs.filename_prefix': "required_input_missing",
    }


def test_converts_values_like_comfyui() -> None:
    wf = _wf(
        n1=_empty(width="32", height=16.9),
        n2=("ImageScaleBy", {"image": ["1", 0], "upscale_method": "area", "scale_by": "2"}),
        n3=("SaveImage", {"images": ["2", 0], "filename_prefix": 7}),
    )
    result = validate_workflow(wf, NATIVE_CATALOG)
    assert result.ok, result.comfy_body()
    assert result.workflow is not None
    assert result.workflow["1"].inputs["width"] == 32
    assert result.workflow["1"].inputs["height"] == 16
    assert result.workflow["2"].inputs["scale_by"] == 2.0
    assert result.workflow["2"].inputs["image"] == Link("1", 0)
    assert result.workflow["3"].inputs["filename_prefix"] == "7"


def test_int_conversion_failure_message() -> None:
    wf = _wf(n1=_empty(width="1.5"), n2=("SaveImage", SAVE))
    result = validate_workflow(wf, NATIVE_CATALOG)
    [node] = result.node_errors
    [error] = node.errors
    assert error.type == "invalid_input_type"
    assert error.details == "width, 1.5, invalid literal for int() with base 10: '1.5'"


def test_above_max() -> None:
    wf = _wf(n1=_empty(batch_size=5000), n2=("SaveImage", SAVE))
    result = validate_workflow(wf, NATIVE_CATALOG)
    [node] = result.node_errors
    assert node.errors[0].to_comfy() == {
        "type": "value_bigger_than_max",
        "message": "Value 5000 bigger than max of 4096",
        "details": "batch_size",
        "extra_info": {
            "input_name": "batch_size",
            "input_config": ["INT", {"default": 1, "min": 1, "max": 4096}],
            "received_value": 5000,
        },
    }


def test_every_error_of_a_node_is_reported() -> None:
    wf = _wf(
        n1=("EmptyImage", {"width": 0, "height": 99999, "color": "red"}), n2=("SaveImage", SAVE)
    )
    result = validate_workflow(wf, NATIVE_CATALOG)
    assert sorted(_errors(result, "1")) == [
        "invalid_input_type",
        "required_input_missing",
        "value_bigger_than_max",
        "value_smaller_than_min",
    ]


def test_bad_link_shapes() -> None:
    wf = _wf(
        n1=_empty(),
        n2=("ImageInvert", {"image": ["1", 0, 1]}),
        n3=("SaveImage", {"images": ["2", 0], "filename_prefix": "x"}),
    )
    result = validate_workflow(wf, NATIVE_CATALOG)
    assert _errors(result, "2") == ["bad_linked_input"]


def test_link_to_missing_output_slot() -> None:
    wf = _wf(
        n1=_empty(),
        n2=("ImageInvert", {"image": ["1", 3]}),
        n3=("SaveImage", {"images": ["2", 0], "filename_prefix": "x"}),
    )
    result = validate_workflow(wf, NATIVE_CATALOG)
    [node] = result.node_errors
    assert node.node_id == "2"
    [error] = node.errors
    assert error.type == "exception_during_inner_validation"
    assert error.extra_info["exception_type"] == "IndexError"
    assert error.field == 'workflow["2"].inputs.image'
    assert "has 1 output" in error.description


def test_output_node_linking_a_missing_node() -> None:
    wf = _wf(n1=("SaveImage", {"images": ["42", 0], "filename_prefix": "x"}))
    result = validate_workflow(wf, NATIVE_CATALOG)
    assert result.error is not None
    [node] = result.node_errors
    [error] = node.errors
    assert error.type == "exception_during_validation"
    assert error.details == "'42'"
    assert error.field == 'workflow["1"].inputs.images'


def test_link_type_mismatch_into_a_combo() -> None:
    wf = _wf(
        n1=("PrimitiveString", {"value": "bilinear"}),
        n2=_empty(),
        n3=("ImageScaleBy", {"image": ["2", 0], "upscale_method": ["1", 0], "scale_by": 1.0}),
        n4=("SaveImage", {"images": ["3", 0], "filename_prefix": "x"}),
    )
    result = validate_workflow(wf, NATIVE_CATALOG)
    assert _errors(result, "3") == ["return_type_mismatch"]


def test_any_type_accepts_every_link() -> None:
    wf = _wf(n1=_empty(), n2=("PreviewAny", {"source": ["1", 0]}))
    assert validate_workflow(wf, NATIVE_CATALOG).ok


def test_combo_linked_from_new_style_combo_ok_and_optional_inputs() -> None:
    wf = _wf(
        n1=_empty(),
        n2=(
            "ImageStitch",
            {
                "image1": ["1", 0],
                "direction": "right",
                "match_image_size": True,
                "spacing_width": 0,
                "spacing_color": "white",
                "ignored_extra": 5,
            },
        ),
        n3=("SaveImage", {"images": ["2", 0], "filename_prefix": "x"}),
    )
    assert validate_workflow(wf, NATIVE_CATALOG).ok


def test_new_style_combo_value_not_in_list() -> None:
    wf = _wf(
        n1=("CaseConverter", {"string": "a", "mode": "shout"}),
        n2=("PreviewAny", {"source": ["1", 0]}),
    )
    result = validate_workflow(wf, NATIVE_CATALOG)
    [node] = result.node_errors
    assert node.errors[0].details == (
        "mode: 'shout' not in ['UPPERCASE', 'lowercase', 'Capitalize', 'Title Case']"
    )


def test_loader_files_checked_only_with_a_store_check() -> None:
    wf = _wf(n1=("LoadImage", {"image": "nope.png"}), n2=("SaveImage", SAVE))
    assert validate_workflow(wf, NATIVE_CATALOG).ok
    result = validate_workflow(wf, NATIVE_CATALOG, file_exists=lambda s, i, name: False)
    [node] = result.node_errors
    assert node.errors[0].to_comfy()["details"] == "image - Invalid image file: nope.png"
    ok = validate_workflow(wf, NATIVE_CATALOG, file_exists=lambda s, i, name: name == "nope.png")
    assert ok.ok


def test_dependency_cycle_names_the_node() -> None:
    wf = _wf(
        n1=("ImageInvert", {"image": ["2", 0]}),
        n2=("ImageInvert", {"image": ["1", 0]}),
        n3=("SaveImage", {"images": ["2", 0], "filename_prefix": "x"}),
    )
    result = validate_workflow(wf, NATIVE_CATALOG)
    assert not result.ok
    assert _errors(result, "1") == [ErrorType.DEPENDENCY_CYCLE]


def test_malformed_json() -> None:
    result = validate_workflow("{not json", NATIVE_CATALOG)
    assert result.error is not None and result.error.type == "malformed_json"
    assert result.field_violations()[0].field == "workflow"
    listing = validate_workflow(json.dumps([1, 2]), NATIVE_CATALOG)
    assert listing.error is not None and listing.error.type == "malformed_json"


def test_node_without_inputs_object() -> None:
    wf = {"1": {"class_type": "SaveImage"}}
    result = validate_workflow(wf, NATIVE_CATALOG)
    [node] = result.node_errors
    assert node.errors[0].type == "exception_during_validation"
    assert node.errors[0].details == "'inputs'"


def test_restricting_outputs() -> None:
    result = validate_workflow(workflow_text("partial_valid"), NATIVE_CATALOG, outputs=["4"])
    assert not result.ok and result.outputs == ()
    assert validate_workflow(workflow_text("partial_valid"), NATIVE_CATALOG, outputs=["2"]).ok
