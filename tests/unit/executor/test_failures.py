"""What an attempt reports for each way it can end, and which requests it refuses."""

from __future__ import annotations

import json

import pytest
from google.rpc import code_pb2

from comfyfleet.common.errors import (
    FieldViolation,
    InvalidArgument,
    Unavailable,
    error_info,
    field_violations,
)
from services.executor.attempt import (
    AttemptSpec,
    InputSpec,
    SlotSpec,
    failure_of,
    validate_spec,
)
from services.executor.engine import NodeRaised, RunInterrupted, WorkflowRejected
from services.executor.models import ModelSpec


def test_a_node_that_raised_is_a_workflow_error_naming_the_node() -> None:
    err = failure_of(NodeRaised("3", "LatentConcat", "RuntimeError", "sizes differ"))

    status = err.to_status()
    assert err.retryable is False
    assert status.code == code_pb2.FAILED_PRECONDITION
    info = error_info(status)
    assert info is not None
    assert info.reason == "NODE_EXECUTION_FAILED"
    assert dict(info.metadata) == {
        "node_id": "3",
        "node_type": "LatentConcat",
        "exception_type": "RuntimeError",
        "exception_message": "sizes differ",
    }
    assert "node 3 (LatentConcat)" in status.message


def test_a_node_out_of_memory_may_be_retried() -> None:
    err = failure_of(NodeRaised("2", "ImageScale", "torch.OutOfMemoryError", "CUDA out of memory"))

    assert err.retryable is True
    assert err.to_status().code == code_pb2.RESOURCE_EXHAUSTED


def test_a_rejected_workflow_is_invalid_argument_with_its_violations() -> None:
    violation = FieldViolation('workflow["1"].class_type', "unknown node type", "invalid_prompt")
    err = failure_of(WorkflowRejected("the workflow is invalid", [violation]))

    assert err.retryable is False
    assert isinstance(err, InvalidArgument)
    assert field_violations(err.to_status()) == [violation]


def test_a_rejection_with_comfyuis_answer_passes_it_on_as_error_info() -> None:
    body = {
        "error": {"type": "prompt_outputs_failed_validation", "message": "Prompt outputs failed"},
        "node_errors": {"3": {"errors": [{"type": "value_not_in_list"}], "class_type": "X"}},
    }
    err = failure_of(WorkflowRejected("the workflow is invalid", (), body))

    info = error_info(err.to_status())
    assert info is not None
    assert json.loads(info.metadata["comfyui_node_errors"]) == body["node_errors"]
    assert json.loads(info.metadata["comfyui_error"]) == body["error"]
    assert "comfyui_node_errors" not in failure_of(WorkflowRejected("bad")).metadata


@pytest.mark.parametrize(
    ("raised", "code", "retryable"),
    [
        (RunInterrupted("stop"), code_pb2.CANCELLED, False),
        (OSError(28, "No space left on device"), code_pb2.UNAVAILABLE, True),
        (Unavailable("GET failed"), code_pb2.UNAVAILABLE, True),
        (KeyError("bug"), code_pb2.INTERNAL, False),
    ],
)
def test_other_endings(raised: BaseException, code: int, retryable: bool) -> None:
    err = failure_of(raised)
    assert (err.to_status().code, err.retryable) == (code, retryable)


def spec(**changes: object) -> AttemptSpec:
    base: dict[str, object] = {
        "execution_id": "exe-1",
        "attempt": 1,
        "tenant": "t",
        "workflow_json": "{}",
        "inputs": (),
        "models": (),
        "output_slots": (SlotSpec(0, "http://s3/slot"),),
        "run_timeout_s": None,
    }
    return AttemptSpec(**{**base, **changes})  # type: ignore[arg-type]


def test_a_sound_request_passes() -> None:
    validate_spec(spec(inputs=(InputSpec("sub/shapes.png", "http://s3/in", 3),)))


def test_a_bad_request_names_every_bad_field() -> None:
    bad = spec(
        execution_id="",
        attempt=0,
        workflow_json="  ",
        inputs=(InputSpec("../../etc/passwd", "http://s3/in", 3),),
        models=(ModelSpec("m.safetensors", "checkpoints", "ABC", 1, "http://s3/m"),),
        run_timeout_s=-1.0,
    )

    with pytest.raises(InvalidArgument) as refused:
        validate_spec(bad)

    assert {v.field for v in refused.value.violations} == {
        "execution_id",
        "attempt",
        "workflow_json",
        "inputs[0].name",
        "models[0].sha256",
        "run_timeout",
    }
