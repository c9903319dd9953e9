"""``google.rpc.Status`` -> HTTP status, headers and JSON body, as grpc-gateway answers errors."""

from __future__ import annotations

import base64
import json
import math
from typing import Any

from google.protobuf import any_pb2, json_format
from google.rpc import code_pb2, error_details_pb2, status_pb2

from comfyfleet.common.errors import error_info

# grpc-gateway's HTTPStatusFromCode, with CANCELLED as google.rpc.Code documents it (499).
_HTTP_STATUS = {
    code_pb2.OK: 200,
    code_pb2.CANCELLED: 499,
    code_pb2.UNKNOWN: 500,
    code_pb2.INVALID_ARGUMENT: 400,
    code_pb2.DEADLINE_EXCEEDED: 504,
    code_pb2.NOT_FOUND: 404,
    code_pb2.ALREADY_EXISTS: 409,
    code_pb2.PERMISSION_DENIED: 403,
    code_pb2.UNAUTHENTICATED: 401,
    code_pb2.RESOURCE_EXHAUSTED: 429,
    code_pb2.FAILED_PRECONDITION: 400,
    code_pb2.ABORTED: 409,
    code_pb2.OUT_OF_RANGE: 400,
    code_pb2.UNIMPLEMENTED: 501,
    code_pb2.INTERNAL: 500,
    code_pb2.UNAVAILABLE: 503,
    code_pb2.DATA_LOSS: 500,
}

# ErrorInfo metadata key whose JSON value is ComfyUI's `node_errors` object.
NODE_ERRORS_KEY = "comfyui_node_errors"


def http_status(code: int) -> int:
    return _HTTP_STATUS.get(code, 500)


def status_json(status: status_pb2.Status) -> dict[str, Any]:
    """The Status in proto3 JSON (details as Any with ``@type``), plus ComfyUI's node_errors.

    A detail whose type this process does not know is kept as ``@type`` and base64 ``value``
    rather than failing the whole error.
    """
    body: dict[str, Any] = {
        "code": status.code,
        "message": status.message,
        "details": [_detail_json(d) for d in status.details],
    }
    node_errors = _node_errors(status)
    if node_errors is not None:
        body["node_errors"] = node_errors
    return body


def _detail_json(detail: any_pb2.Any) -> dict[str, Any]:
    try:
        return json_format.MessageToDict(detail)
    except (TypeError, KeyError, json_format.Error):
        return {"@type": detail.type_url, "value": base64.b64encode(detail.value).decode()}


def _node_errors(status: status_pb2.Status) -> Any:
    info = error_info(status)
    raw = info.metadata.get(NODE_ERRORS_KEY) if info is not None else None
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return None


def retry_after(status: status_pb2.Status) -> str | None:
    """Whole seconds for a ``Retry-After`` header, from the Status's RetryInfo, if any."""
    for detail in status.details:
        info = error_details_pb2.RetryInfo()
        if detail.Unpack(info):
            seconds = info.retry_delay.seconds + info.retry_delay.nanos / 1e9
            return str(max(0, math.ceil(seconds)))
    return None
