"""request_id handling: the digest of a request, and the Idempotency-Key header."""

from __future__ import annotations

import pytest

from comfyfleet.common.errors import InvalidArgument
from comfyfleet.executions.v1 import executions_pb2
from services.gateway.idempotency import MAX_REQUEST_ID, fill_request_id, fingerprint


def request(**kw: object) -> executions_pb2.CreateExecutionRequest:
    return executions_pb2.CreateExecutionRequest(workflow_json="{}", **kw)  # type: ignore[arg-type]


def test_fingerprint_ignores_request_id_but_sees_every_other_field() -> None:
    base = fingerprint(request(request_id="a", priority=1))
    assert fingerprint(request(request_id="b", priority=1)) == base
    assert fingerprint(request(request_id="a", priority=2)) != base
    assert fingerprint(request(request_id="a", priority=1, labels={"x": "1"})) != base


def test_fingerprint_of_maps_does_not_depend_on_insertion_order() -> None:
    labels = {f"k{i}": str(i) for i in range(50)}
    reverse = dict(reversed(list(labels.items())))
    assert fingerprint(request(labels=labels)) == fingerprint(request(labels=reverse))


def test_fingerprint_leaves_the_request_unchanged() -> None:
    msg = request(request_id="keep")
    fingerprint(msg)
    assert msg.request_id == "keep"


def test_header_fills_an_empty_request_id() -> None:
    msg = request()
    assert fill_request_id(msg, [("idempotency-key", " abc ")]) == "abc"
    assert msg.request_id == "abc"


def test_request_id_and_an_equal_header_agree() -> None:
    msg = request(request_id="abc")
    assert fill_request_id(msg, [("idempotency-key", "abc")]) == "abc"


def test_request_id_and_a_different_header_are_invalid() -> None:
    with pytest.raises(InvalidArgument) as caught:
        fill_request_id(request(request_id="abc"), [("idempotency-key", "xyz")])
    assert caught.value.violations[0].field == "request_id"


def test_too_long_request_id_is_invalid() -> None:
    with pytest.raises(InvalidArgument):
        fill_request_id(request(request_id="x" * (MAX_REQUEST_ID + 1)), [])
    assert fill_request_id(request(), []) == ""


@pytest.mark.parametrize("request_id", ["a\x00b", "tab\there", "\x11"])
def test_control_characters_in_request_id_are_invalid(request_id: str) -> None:
    with pytest.raises(InvalidArgument):
        fill_request_id(executions_pb2.CreateExecutionRequest(request_id=request_id), ())
