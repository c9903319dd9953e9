"""Errors the SDK raises: the platform's status, readable by a person who must act on it."""

from __future__ import annotations

import grpc
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from comfyfleet.common.errors import error_info, field_violations

# What a person can do about each kind of refusal, when the status itself does not say.
_HINTS = {
    code_pb2.UNAUTHENTICATED: "check the API key: --api-key, $COMFYFLEET_API_KEY, or the key "
    "`make up` wrote to .comfyfleet/admin.key",
    code_pb2.PERMISSION_DENIED: "ask an admin for a key with the scope named above",
    code_pb2.UNAVAILABLE: "is the platform running? start it with `make up`, or check --addr",
    code_pb2.DEADLINE_EXCEEDED: "the platform did not answer in time; try again",
}


class ApiError(Exception):
    """A call the platform refused or could not finish."""

    def __init__(self, status: status_pb2.Status) -> None:
        self.status = status
        super().__init__(describe(status))

    @property
    def code(self) -> str:
        return code_pb2.Code.Name(self.status.code)

    @property
    def reason(self) -> str:
        info = error_info(self.status)
        return info.reason if info is not None else ""

    @property
    def retry_after_s(self) -> float | None:
        """How long the platform asked the caller to wait before retrying, if it did."""
        retry = _unpack(self.status, error_details_pb2.RetryInfo)
        if not isinstance(retry, error_details_pb2.RetryInfo):
            return None
        return retry.retry_delay.ToNanoseconds() / 1e9


def _unpack(status: status_pb2.Status, kind: type) -> object | None:
    for detail in status.details:
        message = kind()
        if detail.Unpack(message):
            return message
    return None


def describe(status: status_pb2.Status) -> str:
    """``CODE: message``, a line per field violation or quota, and what to do next."""
    lines = [f"{code_pb2.Code.Name(status.code)}: {status.message}"]
    lines.extend(f"  - {v.field}: {v.description}" for v in field_violations(status))
    quota = _unpack(status, error_details_pb2.QuotaFailure)
    if isinstance(quota, error_details_pb2.QuotaFailure):
        lines.extend(f"  - {v.subject}: {v.description}" for v in quota.violations)
    retry = _unpack(status, error_details_pb2.RetryInfo)
    if isinstance(retry, error_details_pb2.RetryInfo):
        lines.append(f"  retry in {retry.retry_delay.ToNanoseconds() / 1e9:.1f}s")
    hint = _HINTS.get(status.code)
    # An UNAVAILABLE our services raised says itself what failed; only a connection
    # failure (no ErrorInfo) suggests the platform is not running.
    if hint and not (status.code == code_pb2.UNAVAILABLE and error_info(status)):
        lines.append(f"  ({hint})")
    return "\n".join(lines)


def api_error(err: grpc.RpcError) -> ApiError:
    status = rpc_status.from_call(err)  # type: ignore[arg-type]
    if status is None:
        code = err.code()  # type: ignore[attr-defined]
        status = status_pb2.Status(code=code.value[0], message=err.details() or "")  # type: ignore[attr-defined]
    return ApiError(status)
