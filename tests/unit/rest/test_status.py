"""Statuses become grpc-gateway's HTTP errors: status code, Status JSON, Retry-After."""

from __future__ import annotations

import json

import pytest
from google.protobuf import any_pb2
from google.rpc import code_pb2, status_pb2

from comfyfleet.common import errors
from services.gateway.rest.status import (
    NODE_ERRORS_KEY,
    http_status,
    retry_after,
    status_json,
)


@pytest.mark.parametrize(
    ("code", "http"),
    [
        (code_pb2.INVALID_ARGUMENT, 400),
        (code_pb2.FAILED_PRECONDITION, 400),
        (code_pb2.OUT_OF_RANGE, 400),
        (code_pb2.UNAUTHENTICATED, 401),
        (code_pb2.PERMISSION_DENIED, 403),
        (code_pb2.NOT_FOUND, 404),
        (code_pb2.ALREADY_EXISTS, 409),
        (code_pb2.ABORTED, 409),
        (code_pb2.RESOURCE_EXHAUSTED, 429),
        (code_pb2.CANCELLED, 499),
        (code_pb2.UNIMPLEMENTED, 501),
        (code_pb2.UNAVAILABLE, 503),
        (code_pb2.DEADLINE_EXCEEDED, 504),
        (code_pb2.INTERNAL, 500),
        (code_pb2.UNKNOWN, 500),
        (code_pb2.DATA_LOSS, 500),
        (99, 500),
    ],
)
def test_codes_map_like_grpc_gateway(code: int, http: int) -> None:
    assert http_status(code) == http


def test_details_are_any_with_type_urls() -> None:
    err = errors.InvalidArgument(
        "bad request", [errors.FieldViolation("priority", "must be within -100..100", "RANGE")]
    )
    body = status_json(err.to_status())
    assert body["code"] == 3
    assert body["message"] == "bad request"
    types = [d["@type"] for d in body["details"]]
    assert types == [
        "type.googleapis.com/google.rpc.ErrorInfo",
        "type.googleapis.com/google.rpc.BadRequest",
    ]
    assert body["details"][1]["fieldViolations"] == [
        {"field": "priority", "description": "must be within -100..100", "reason": "RANGE"}
    ]
    assert "node_errors" not in body


def test_an_empty_status_still_has_every_key() -> None:
    assert status_json(status_pb2.Status(code=5)) == {"code": 5, "message": "", "details": []}


def test_unknown_detail_types_are_kept_raw() -> None:
    detail = any_pb2.Any(type_url="type.googleapis.com/some.unknown.Type", value=b"\x01\x02")
    body = status_json(status_pb2.Status(code=13, message="x", details=[detail]))
    assert body["details"] == [{"@type": "type.googleapis.com/some.unknown.Type", "value": "AQI="}]


def test_comfyui_node_errors_are_lifted_to_the_top() -> None:
    node_errors = {"3": {"errors": [{"type": "value_not_in_list"}], "class_type": "KSampler"}}
    err = errors.InvalidArgument(
        "workflow is invalid", metadata={NODE_ERRORS_KEY: json.dumps(node_errors)}
    )
    assert status_json(err.to_status())["node_errors"] == node_errors


def test_node_errors_that_are_not_json_are_left_out() -> None:
    err = errors.InvalidArgument("x", metadata={NODE_ERRORS_KEY: "{oops"})
    assert "node_errors" not in status_json(err.to_status())


@pytest.mark.parametrize(("delay", "header"), [(30.0, "30"), (0.2, "1"), (1.5, "2"), (0.0, "0")])
def test_retry_after_rounds_retry_info_up(delay: float, header: str) -> None:
    status = errors.ResourceExhausted("slow down", retry_after_s=delay).to_status()
    assert retry_after(status) == header


def test_no_retry_info_no_retry_after() -> None:
    assert retry_after(errors.ResourceExhausted("slow down").to_status()) is None
