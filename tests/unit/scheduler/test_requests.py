"""Validating CreateExecutionRequest before anything is stored."""

from __future__ import annotations

import json

import pytest
from google.protobuf import duration_pb2, struct_pb2

from comfyfleet.common.errors import InvalidArgument
from comfyfleet.executions.v1 import executions_pb2
from services.scheduler.config import SchedulerSettings
from services.scheduler.requests import (
    URL_INPUTS_DISABLED,
    integral_floats_to_ints,
    parse_create_request,
    parse_label_selector,
)

SETTINGS = SchedulerSettings()
GRAPH = {
    "1": {"class_type": "LoadImage", "inputs": {"image": "cat.png"}},
    "2": {"class_type": "KSampler", "inputs": {"seed": 12345678901234567, "cfg": 7.5, "steps": 20}},
}


def request(**fields: object) -> executions_pb2.CreateExecutionRequest:
    fields.setdefault("workflow_json", json.dumps(GRAPH))
    return executions_pb2.CreateExecutionRequest(**fields)  # type: ignore[arg-type]


def violations(req: executions_pb2.CreateExecutionRequest) -> dict[str, str]:
    with pytest.raises(InvalidArgument) as caught:
        parse_create_request(req, SETTINGS)
    return {v.field: v.description for v in caught.value.violations}


def test_defaults_apply_and_json_keeps_big_integers() -> None:
    new = parse_create_request(request(), SETTINGS)
    assert new.workflow == GRAPH
    assert new.workflow["2"]["inputs"]["seed"] == 12345678901234567
    assert new.max_attempts == SETTINGS.max_attempts
    assert new.queue_timeout_s == SETTINGS.queue_timeout_s
    assert new.run_timeout_s == SETTINGS.run_timeout_s
    assert new.timeout_s == SETTINGS.execution_timeout_s
    assert new.request_id is None
    assert new.node_types == ["KSampler", "LoadImage"]


def test_workflow_json_wins_over_the_struct() -> None:
    struct = struct_pb2.Struct()
    struct.update({"9": {"class_type": "Other", "inputs": {}}})
    new = parse_create_request(request(workflow=struct), SETTINGS)
    assert set(new.workflow) == {"1", "2"}


def test_struct_numbers_that_are_integral_become_ints() -> None:
    struct = struct_pb2.Struct()
    struct.update(
        {"3": {"class_type": "KSampler", "inputs": {"steps": 20, "cfg": 7.5, "l": [1, ["4", 0]]}}}
    )
    new = parse_create_request(executions_pb2.CreateExecutionRequest(workflow=struct), SETTINGS)
    inputs = new.workflow["3"]["inputs"]
    assert inputs == {"steps": 20, "cfg": 7.5, "l": [1, ["4", 0]]}
    assert isinstance(inputs["steps"], int) and isinstance(inputs["l"][1][1], int)
    assert integral_floats_to_ints({"a": [2.0, 2.5]}) == {"a": [2, 2.5]}


@pytest.mark.parametrize(
    ("workflow_json", "field"),
    [
        ("{not json", "workflow_json"),
        ("[1, 2]", "workflow_json"),
        ("{}", "workflow_json"),
        ('{"1": 5}', 'workflow_json["1"]'),
        ('{"1": {"inputs": {}}}', 'workflow_json["1"].class_type'),
        ('{"1": {"class_type": "X", "inputs": []}}', 'workflow_json["1"].inputs'),
        ('{"1": {"class_type": "X", "inputs": {"a": NaN}}}', "workflow_json"),
        ('{"1": {"class_type": "X", "inputs": {"a": 1' + "0" * 400 + "}}}", "workflow_json"),
    ],
)
def test_malformed_workflows_are_rejected(workflow_json: str, field: str) -> None:
    assert field in violations(request(workflow_json=workflow_json))


def test_a_workflow_is_required() -> None:
    assert "workflow" in violations(executions_pb2.CreateExecutionRequest())


def test_url_inputs_are_not_enabled() -> None:
    found = violations(
        request(inputs=[executions_pb2.InputFile(name="a.png", url="https://x/a.png")])
    )
    assert found == {"inputs[0].url": URL_INPUTS_DISABLED}


@pytest.mark.parametrize(
    "name", ["", "../etc/passwd", "/abs.png", "a/../../b.png", "a\x00b", "x" * 300]
)
def test_unsafe_input_names_are_rejected(name: str) -> None:
    found = violations(request(inputs=[executions_pb2.InputFile(name=name, content=b"x")]))
    assert "inputs[0].name" in found


def test_inputs_get_a_content_type_and_must_have_unique_names() -> None:
    new = parse_create_request(
        request(inputs=[executions_pb2.InputFile(name="sub/cat.png", content=b"png")]), SETTINGS
    )
    assert new.inputs[0].content_type == "image/png"
    dup = [executions_pb2.InputFile(name="a.png", content=b"1")] * 2
    assert "inputs[1].name" in violations(request(inputs=dup))
    assert "inputs[0].content" in violations(
        request(inputs=[executions_pb2.InputFile(name="a.png")])
    )


def test_every_bad_field_is_reported_at_once() -> None:
    found = violations(
        request(
            workflow_json="[]",
            priority=101,
            max_attempts=SETTINGS.max_attempts_limit + 1,
            request_id="r" * 200,
            labels={"": "x"},
            queue_timeout=duration_pb2.Duration(seconds=-1),
            run_timeout=duration_pb2.Duration(seconds=int(SETTINGS.max_timeout_s) + 1),
            timeout=duration_pb2.Duration(),
        )
    )
    assert set(found) == {
        "workflow_json",
        "priority",
        "max_attempts",
        "request_id",
        'labels[""]',
        "queue_timeout",
        "run_timeout",
        "timeout",
    }


def test_fingerprint_tells_requests_apart() -> None:
    base = parse_create_request(request(request_id="k"), SETTINGS)
    same = parse_create_request(request(request_id="k"), SETTINGS)
    other = parse_create_request(request(request_id="k", priority=5), SETTINGS)
    other_input = parse_create_request(
        request(request_id="k", inputs=[executions_pb2.InputFile(name="a.png", content=b"1")]),
        SETTINGS,
    )
    assert base.fingerprint() == same.fingerprint()
    assert base.fingerprint() != other.fingerprint()
    assert base.fingerprint() != other_input.fingerprint()


def test_an_overall_timeout_is_taken_and_fingerprinted() -> None:
    new = parse_create_request(request(timeout=duration_pb2.Duration(seconds=90)), SETTINGS)
    assert new.timeout_s == 90.0
    assert new.fingerprint() != parse_create_request(request(), SETTINGS).fingerprint()


def test_webhook_events_take_the_subscription_filter_syntax_for_execution_events() -> None:
    patterns = ["execution.succeeded", "execution.*"]
    assert parse_create_request(request(webhook_events=patterns), SETTINGS).webhook_events == (
        patterns
    )
    found = violations(
        request(
            webhook_events=[
                "execution.failed",
                "execution.finished",
                "webhook.*",
                "execution.failed",
            ]
        )
    )
    assert set(found) == {"webhook_events[1]", "webhook_events[2]", "webhook_events[3]"}
    assert "execution.finished" in found["webhook_events[1]"]
    assert "twice" in found["webhook_events[3]"]
    assert set(violations(request(webhook_events=["execution.failed"] * 33))) == {"webhook_events"}


def test_the_fingerprint_covers_the_webhook_events_but_not_their_order() -> None:
    def digest(events: list[str]) -> str:
        return parse_create_request(request(webhook_events=events), SETTINGS).fingerprint()

    both = digest(["execution.failed", "execution.succeeded"])
    assert both == digest(["execution.succeeded", "execution.failed"])
    assert both != digest(["execution.failed"])
    assert digest([]) != digest(["execution.*"])


def test_a_label_selector_is_checked_like_labels() -> None:
    assert parse_label_selector({"env": "prod", "empty": ""}) == {"env": "prod", "empty": ""}
    with pytest.raises(InvalidArgument) as caught:
        parse_label_selector({"": "a", "k": "v" * 257})
    assert [v.field for v in caught.value.violations] == ['labels[""]', 'labels["k"]']
    with pytest.raises(InvalidArgument) as caught:
        parse_label_selector({f"k{i}": "" for i in range(65)})
    assert [v.field for v in caught.value.violations] == ["labels"]
