import json
from pathlib import Path

import pytest
from google.protobuf import json_format, struct_pb2

from comfyfleet.common.errors import InvalidArgument, error_info
from comfyfleet.common.workflowcheck import check_workflow
from comfyfleet.workflow.catalog import NATIVE_CATALOG
from comfyfleet.workflow.validate import COMFYUI_NODE_ERRORS
from services.gateway.validation import workflow_text
from tests.support.paths import comfyui_ref

WORKFLOWS = comfyui_ref() / "workflows"


def load(name: str) -> str:
    return (WORKFLOWS / name).read_text()


def test_reference_workflow_passes() -> None:
    check_workflow(load("r01_invert.json"), NATIVE_CATALOG)


@pytest.mark.parametrize(
    "name",
    [
        "invalid_unknown_class.json",
        "invalid_missing_link.json",
        "invalid_wrong_value_type.json",
        "invalid_no_outputs.json",
        "invalid_multi_validation.json",
        "invalid_wrong_link_type.json",
        "invalid_missing_class_type.json",
    ],
)
def test_invalid_workflows_raise_invalid_argument_with_violations(name: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        check_workflow(load(name), NATIVE_CATALOG)
    assert caught.value.violations, name
    status = caught.value.to_status()
    info = error_info(status)
    assert info is not None and info.reason == "INVALID_WORKFLOW"
    json.loads(info.metadata[COMFYUI_NODE_ERRORS])


def test_per_node_violation_names_node_and_input() -> None:
    with pytest.raises(InvalidArgument) as caught:
        check_workflow(load("invalid_wrong_value_type.json"), NATIVE_CATALOG)
    fields = [v.field for v in caught.value.violations]
    assert any('"4"' in f and "scale_by" in f for f in fields), fields


def test_malformed_json_is_invalid_argument() -> None:
    with pytest.raises(InvalidArgument):
        check_workflow("{not json", NATIVE_CATALOG)


def test_struct_numbers_come_back_as_ints() -> None:
    workflow = json.loads(load("a_tiny.json"))
    struct = struct_pb2.Struct()
    json_format.ParseDict(workflow, struct)
    assert json.loads(workflow_text("", struct)) == workflow


def test_missing_workflow_is_invalid_argument() -> None:
    with pytest.raises(InvalidArgument):
        workflow_text("", struct_pb2.Struct())


def test_reference_dir_exists() -> None:
    assert isinstance(comfyui_ref(), Path) and WORKFLOWS.is_dir()


def violations_of(text: str) -> list[tuple[str, str]]:
    with pytest.raises(InvalidArgument) as caught:
        check_workflow(text, NATIVE_CATALOG)
    return [(v.field, v.reason) for v in caught.value.violations]


def test_values_beyond_the_workflow_limits_are_named_before_validation() -> None:
    workflow = json.loads(load("r01_invert.json"))
    workflow["3"]["inputs"]["filename_prefix"] = "\ud800"
    workflow["1"]["inputs"]["upload"] = [float("nan"), 2**70]
    text = json.dumps(workflow)
    assert violations_of(text) == [
        ('workflow["1"].inputs.upload[0]', "NUMBER_NOT_FINITE"),
        ('workflow["1"].inputs.upload[1]', "INTEGER_OUT_OF_RANGE"),
        ('workflow["3"].inputs.filename_prefix', "INVALID_TEXT"),
    ]


def test_json_too_deep_to_decode_is_a_violation_not_a_crash() -> None:
    deep = '{"1": {"class_type": "SaveImage", "inputs": {"x": ' + "[" * 50_000 + "]" * 50_000
    assert violations_of(deep + "}}}") == [("workflow", "NESTED_TOO_DEEP")]


def test_a_chain_of_ten_thousand_nodes_passes() -> None:
    workflow: dict[str, object] = {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0},
        }
    }
    for i in range(2, 10_000):
        workflow[str(i)] = {"class_type": "ImageInvert", "inputs": {"image": [str(i - 1), 0]}}
    workflow["10000"] = {
        "class_type": "SaveImage",
        "inputs": {"images": ["9999", 0], "filename_prefix": "x"},
    }
    check_workflow(json.dumps(workflow), NATIVE_CATALOG)
    workflow["10001"] = workflow["10000"]
    assert violations_of(json.dumps(workflow)) == [("workflow", "TOO_MANY_NODES")]


def test_a_struct_with_non_finite_numbers_becomes_per_field_violations() -> None:
    workflow = json.loads(load("r01_invert.json"))
    struct = struct_pb2.Struct()
    json_format.ParseDict(workflow, struct)
    struct["1"]["inputs"]["extra"] = float("inf")  # type: ignore[index]
    assert violations_of(workflow_text("", struct)) == [
        ('workflow["1"].inputs.extra', "NUMBER_NOT_FINITE")
    ]


def test_thousands_of_node_errors_leave_comfyui_s_answer_out() -> None:
    # ComfyUI's body would list every later failing output under each failing node (tens of
    # megabytes here); the violations alone say it, and fit in a status.
    workflow: dict[str, object] = {}
    for i in range(3000):
        workflow[f"e{i}"] = {"class_type": "EmptyImage", "inputs": {"width": -1}}
        workflow[f"s{i}"] = {"class_type": "SaveImage", "inputs": {"images": [f"e{i}", 0]}}
    with pytest.raises(InvalidArgument) as caught:
        check_workflow(json.dumps(workflow), NATIVE_CATALOG)
    assert len(caught.value.violations) > 3000
    assert COMFYUI_NODE_ERRORS not in caught.value.metadata
