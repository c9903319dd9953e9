import json
from pathlib import Path

import pytest
from google.protobuf import json_format, struct_pb2

from comfyfleet.common.errors import InvalidArgument, error_info
from comfyfleet.workflow.catalog import NATIVE_CATALOG
from services.gateway.validation import COMFYUI_NODE_ERRORS, check_workflow, workflow_text
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
