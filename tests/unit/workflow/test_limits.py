"""The documented limits of a workflow: one violation per offending value, naming its field."""

from __future__ import annotations

import json
import math
from typing import Any

from comfyfleet.workflow.limits import WORKFLOW_LIMITS, LimitReason, WorkflowLimits

LIMITS = WORKFLOW_LIMITS


def node(**inputs: Any) -> dict[str, Any]:
    return {"class_type": "PrimitiveString", "inputs": inputs}


def found(value: Any, limits: WorkflowLimits = LIMITS) -> list[tuple[str, str]]:
    return [(v.field, v.reason) for v in limits.violations(value)]


def test_the_defaults_are_the_documented_ones() -> None:
    assert (LIMITS.max_nodes, LIMITS.max_depth, LIMITS.max_string_chars) == (10_000, 32, 65_536)
    assert (LIMITS.min_int, LIMITS.max_int) == (-(2**63), 2**64 - 1)


def test_a_workflow_within_the_limits_has_no_violation() -> None:
    longest = "x" * 65_536
    workflow = {str(i): node(value=longest, seed=2**64 - 1, low=-(2**63)) for i in range(10_000)}
    assert found(workflow) == []


def test_one_node_too_many() -> None:
    workflow = {str(i): node(value="x") for i in range(10_001)}
    assert found(workflow) == [("workflow", LimitReason.TOO_MANY_NODES)]
    assert "10001 nodes; at most 10000" in LIMITS.violations(workflow)[0].description


def test_each_bad_value_is_named_by_its_path_in_document_order() -> None:
    workflow = {
        "3": node(
            text="a\x00b",
            other="\ud800",
            seed=2**64,
            low=-(2**63) - 1,
            color=math.nan,
            big=-math.inf,
            fine=[1.5, "ok", None, True],
            long="y" * 65_537,
        ),
        "odd id": {"inputs": {"has space": [[1, math.inf]], "\udc00": 1, "k\x00": 2}},
    }
    assert found(workflow) == [
        ('workflow["3"].inputs.text', LimitReason.INVALID_TEXT),
        ('workflow["3"].inputs.other', LimitReason.INVALID_TEXT),
        ('workflow["3"].inputs.seed', LimitReason.INTEGER_OUT_OF_RANGE),
        ('workflow["3"].inputs.low', LimitReason.INTEGER_OUT_OF_RANGE),
        ('workflow["3"].inputs.color', LimitReason.NUMBER_NOT_FINITE),
        ('workflow["3"].inputs.big', LimitReason.NUMBER_NOT_FINITE),
        ('workflow["3"].inputs.long', LimitReason.STRING_TOO_LONG),
        ('workflow["odd id"].inputs["has space"][0][1]', LimitReason.NUMBER_NOT_FINITE),
        ('workflow["odd id"].inputs["\udc00"]', LimitReason.INVALID_TEXT),
        ('workflow["odd id"].inputs["k\\u0000"]', LimitReason.INVALID_TEXT),
    ]
    described = {v.field: v.description for v in LIMITS.violations(workflow)}
    assert described['workflow["odd id"].inputs["k\\u0000"]'].startswith("the name contains a NUL")


def nested(depth: int) -> Any:
    """A workflow whose deepest container is at ``depth`` (the workflow is level 1)."""
    value: Any = ["leaf"]
    for _ in range(depth - 4):
        value = [value]
    return {"1": {"inputs": {"deep": value}}}


def test_nesting_up_to_the_limit_is_taken_and_one_more_level_is_named() -> None:
    assert found(nested(32)) == []
    path = 'workflow["1"].inputs.deep' + "[0]" * 29
    assert found(nested(33)) == [(path, LimitReason.NESTED_TOO_DEEP)]


def test_text_too_deep_for_the_decoder_is_the_depth_violation() -> None:
    text = '{"1": {"inputs": {"x": ' + "[" * 100_000 + "]" * 100_000 + "}}}"
    value, violations = LIMITS.load(text)
    assert value is None
    assert [(v.field, v.reason) for v in violations] == [("workflow", LimitReason.NESTED_TOO_DEEP)]


def test_load_reads_non_finite_numbers_and_leaves_non_json_to_validation() -> None:
    value, violations = LIMITS.load('{"1": {"inputs": {"a": NaN, "b": 1e999}}}')
    assert math.isnan(value["1"]["inputs"]["a"])
    assert [v.field for v in violations] == ['workflow["1"].inputs.a', 'workflow["1"].inputs.b']
    assert LIMITS.load("{not json") == (None, [])
    assert LIMITS.load(json.dumps({"1": node(x=1)})) == ({"1": node(x=1)}, [])


def test_a_long_key_is_shortened_in_its_path_and_violations_are_bounded() -> None:
    key = "k" * 70_000
    [violation] = LIMITS.violations({"1": {"inputs": {key: 1}}})
    assert violation.field == 'workflow["1"].inputs["' + "k" * 64 + '…"]'
    assert violation.reason == LimitReason.STRING_TOO_LONG
    many = {"1": {"inputs": {"x": [math.nan] * 10_000}}}
    assert len(LIMITS.violations(many)) == LIMITS.max_violations
