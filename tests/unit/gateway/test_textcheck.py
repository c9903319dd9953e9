import pytest

from comfyfleet.common.errors import InvalidArgument
from comfyfleet.executions.v1 import executions_pb2
from comfyfleet.webhooks.v1 import webhooks_pb2
from services.gateway.textcheck import check_text, nul_fields


def test_nul_in_nested_repeated_and_map_fields_is_found() -> None:
    request = executions_pb2.CreateExecutionRequest(
        workflow_json="{}",
        labels={"team": "a\x00b", "ok\x00": "x"},
        inputs=[executions_pb2.InputFile(name="fine.png"), executions_pb2.InputFile(name="\x00")],
    )
    request.workflow.update({"1": {"inputs": {"text": "x\x00"}}})
    found = set(nul_fields(request))
    assert "inputs[1].name" in found
    assert "labels['team']" in found
    assert "labels key" in found
    assert any(p.startswith("workflow.") for p in found)


def test_clean_requests_pass() -> None:
    request = webhooks_pb2.CreateSubscriptionRequest(
        subscription=webhooks_pb2.Subscription(url="https://example.com/hook", description="ü")
    )
    check_text(request)


def test_a_nul_is_invalid_argument_naming_the_field() -> None:
    with pytest.raises(InvalidArgument) as caught:
        check_text(webhooks_pb2.CreateSubscriptionRequest(request_id="a\x00"))
    assert [v.field for v in caught.value.violations] == ["request_id"]
