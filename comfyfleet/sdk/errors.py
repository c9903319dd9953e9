"""Errors the SDK raises: the platform's status, readable by a person."""

from __future__ import annotations

import grpc
from google.rpc import code_pb2, status_pb2
from grpc_status import rpc_status

from comfyfleet.common.errors import error_info, field_violations


class ApiError(Exception):
    """A call the platform refused or could not finish."""

    def __init__(self, status: status_pb2.Status) -> None:
        self.status = status
        super().__init__(describe(status))

    @property
    def code(self) -> str:
        return code_pb2.Code.Name(self.status.code)


def describe(status: status_pb2.Status) -> str:
    """``CODE: message`` then one line per field violation."""
    lines = [f"{code_pb2.Code.Name(status.code)}: {status.message}"]
    lines.extend(f"  - {v.field}: {v.description}" for v in field_violations(status))
    info = error_info(status)
    if info is not None and status.code == code_pb2.UNAVAILABLE:
        lines.append("  (is the platform running? start it with `make up`)")
    return "\n".join(lines)


def api_error(err: grpc.RpcError) -> ApiError:
    status = rpc_status.from_call(err)  # type: ignore[arg-type]
    if status is None:
        code = err.code()  # type: ignore[attr-defined]
        status = status_pb2.Status(code=code.value[0], message=err.details() or "")  # type: ignore[attr-defined]
    if status.code == code_pb2.UNAVAILABLE and not error_info(status):
        status.message += " (is the platform running? start it with `make up`)"
    return ApiError(status)
