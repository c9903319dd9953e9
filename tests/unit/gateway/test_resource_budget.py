"""The gateway refuses, before anything is stored, a workflow whose literal sizes exceed the
resource budget: INVALID_ARGUMENT naming each node that would make the oversized tensor."""

from __future__ import annotations

import json

import pytest

from comfyfleet.common.errors import InvalidArgument, error_info
from comfyfleet.common.workflowcheck import check_workflow
from comfyfleet.workflow.budget import GIB, ResourceBudget
from comfyfleet.workflow.catalog import NATIVE_CATALOG
from services.gateway.config import Limits


def workflow(batch: int) -> str:
    return json.dumps(
        {
            "1": {
                "class_type": "EmptyImage",
                "inputs": {"width": 16384, "height": 16384, "batch_size": batch, "color": 0},
            },
            "2": {
                "class_type": "SaveImage",
                "inputs": {"images": ["1", 0], "filename_prefix": "x"},
            },
            # Needed by no output: never runs, so never counts.
            "9": {
                "class_type": "EmptyImage",
                "inputs": {"width": 16384, "height": 16384, "batch_size": 4096, "color": 0},
            },
        }
    )


def test_an_oversized_node_is_invalid_argument_naming_it() -> None:
    with pytest.raises(InvalidArgument) as caught:
        check_workflow(workflow(64), NATIVE_CATALOG)

    err = caught.value
    assert [(v.field, v.reason) for v in err.violations] == [
        ('workflow["1"]', "NODE_OUTPUT_TOO_LARGE")
    ]
    info = error_info(err.to_status())
    assert info is not None and info.reason == "RESOURCE_BUDGET_EXCEEDED"
    assert "192 GiB" in err.message and 'workflow["1"]' in err.message


def test_the_budget_is_the_configured_one() -> None:
    check_workflow(workflow(1), NATIVE_CATALOG)
    with pytest.raises(InvalidArgument):
        check_workflow(workflow(1), NATIVE_CATALOG, budget=ResourceBudget(max_tensor_bytes=GIB))


def test_the_budget_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COMFYFLEET_GATEWAY_MAX_TENSOR_BYTES", str(GIB))
    monkeypatch.setenv("COMFYFLEET_GATEWAY_MAX_INPUT_PIXELS", "1000000")

    budget = Limits.from_env().budget

    assert (budget.max_tensor_bytes, budget.max_input_pixels) == (GIB, 1_000_000)
