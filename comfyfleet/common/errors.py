"""Typed errors, and the one place they become ``google.rpc.Status`` (AIP-193).

Domain code raises these; the gRPC interceptor in :mod:`comfyfleet.common.grpcserver` turns
them into statuses with details, so servicers never build a status by hand. Each error says
whether retrying may help (Temporal's ``non_retryable`` idea) for the scheduler's retry logic.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

DOMAIN = "comfyfleet.dev"


@dataclass(frozen=True)
class FieldViolation:
    """One bad field of a request: ``field`` is a path such as ``workflow["3"].inputs.image``."""

    field: str
    description: str
    reason: str = ""


@dataclass(frozen=True)
class QuotaViolation:
    """One exhausted quota: what it limits and why the request broke it."""

    subject: str
    description: str


class ComfyfleetError(Exception):
    """Base of every error that crosses a service boundary."""

    code: int = code_pb2.INTERNAL
    reason: str = "INTERNAL"
    retryable: bool = False

    def __init__(
        self,
        message: str,
        *,
        reason: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if reason is not None:
            self.reason = reason
        self.metadata = dict(metadata or {})

    def details(self) -> list[any_pb2.Any]:
        """The status details beyond ErrorInfo; subclasses add their own."""
        return []

    def to_status(self) -> status_pb2.Status:
        info = error_details_pb2.ErrorInfo(
            reason=self.reason, domain=DOMAIN, metadata=self.metadata
        )
        return status_pb2.Status(
            code=self.code, message=self.message, details=[_pack(info), *self.details()]
        )


class InvalidArgument(ComfyfleetError):
    code = code_pb2.INVALID_ARGUMENT
    reason = "INVALID_ARGUMENT"

    def __init__(
        self,
        message: str,
        violations: Iterable[FieldViolation] = (),
        *,
        reason: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message, reason=reason, metadata=metadata)
        self.violations = list(violations)

    def details(self) -> list[any_pb2.Any]:
        if not self.violations:
            return []
        bad = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(
                    field=v.field, description=v.description, reason=v.reason
                )
                for v in self.violations
            ]
        )
        return [_pack(bad)]


class NotFound(ComfyfleetError):
    code = code_pb2.NOT_FOUND
    reason = "NOT_FOUND"


class AlreadyExists(ComfyfleetError):
    code = code_pb2.ALREADY_EXISTS
    reason = "ALREADY_EXISTS"


class FailedPrecondition(ComfyfleetError):
    code = code_pb2.FAILED_PRECONDITION
    reason = "FAILED_PRECONDITION"


class Aborted(ComfyfleetError):
    code = code_pb2.ABORTED
    reason = "ABORTED"
    retryable = True


class Unauthenticated(ComfyfleetError):
    code = code_pb2.UNAUTHENTICATED
    reason = "UNAUTHENTICATED"


class PermissionDenied(ComfyfleetError):
    code = code_pb2.PERMISSION_DENIED
    reason = "PERMISSION_DENIED"


class ResourceExhausted(ComfyfleetError):
    code = code_pb2.RESOURCE_EXHAUSTED
    reason = "RESOURCE_EXHAUSTED"
    retryable = True

    def __init__(
        self,
        message: str,
        *,
        retry_after_s: float | None = None,
        quota: Iterable[QuotaViolation] = (),
        reason: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message, reason=reason, metadata=metadata)
        self.retry_after_s = retry_after_s
        self.quota = list(quota)

    def details(self) -> list[any_pb2.Any]:
        out: list[any_pb2.Any] = []
        if self.retry_after_s is not None:
            delay = duration_pb2.Duration()
            delay.FromNanoseconds(int(self.retry_after_s * 1e9))
            out.append(_pack(error_details_pb2.RetryInfo(retry_delay=delay)))
        if self.quota:
            violations = [
                error_details_pb2.QuotaFailure.Violation(
                    subject=q.subject, description=q.description
                )
                for q in self.quota
            ]
            out.append(_pack(error_details_pb2.QuotaFailure(violations=violations)))
        return out


class Unavailable(ComfyfleetError):
    code = code_pb2.UNAVAILABLE
    reason = "UNAVAILABLE"
    retryable = True


class DeadlineExceeded(ComfyfleetError):
    code = code_pb2.DEADLINE_EXCEEDED
    reason = "DEADLINE_EXCEEDED"
    retryable = True


class Internal(ComfyfleetError):
    code = code_pb2.INTERNAL
    reason = "INTERNAL"


class Unimplemented(ComfyfleetError):
    code = code_pb2.UNIMPLEMENTED
    reason = "UNIMPLEMENTED"


class Cancelled(ComfyfleetError):
    code = code_pb2.CANCELLED
    reason = "CANCELLED"


class RemoteError(ComfyfleetError):
    """A status another service answered with, passed on unchanged."""

    def __init__(self, status: status_pb2.Status) -> None:
        super().__init__(status.message)
        self.status = status
        self.code = status.code
        self.retryable = status.code in _RETRYABLE_CODES

    def to_status(self) -> status_pb2.Status:
        return self.status


_RETRYABLE_CODES = {
    code_pb2.UNAVAILABLE,
    code_pb2.DEADLINE_EXCEEDED,
    code_pb2.ABORTED,
    code_pb2.RESOURCE_EXHAUSTED,
}


def _pack(message: object) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)  # type: ignore[arg-type]
    return packed


def status_of(err: BaseException) -> status_pb2.Status:
    """The status an exception is answered with; unknown exceptions hide their text."""
    if isinstance(err, ComfyfleetError):
        return err.to_status()
    if isinstance(err, NotImplementedError):
        # What a generated servicer base raises for a method the service does not implement.
        return Unimplemented("this method is not implemented by this service").to_status()
    return Internal("internal error").to_status()


def to_grpc_status(status: status_pb2.Status) -> grpc.Status:
    return rpc_status.to_status(status)


def from_rpc_error(err: grpc.aio.AioRpcError | grpc.RpcError) -> RemoteError:
    """The status carried by a failed call, rich details included when the peer sent them."""
    status = rpc_status.from_call(err)  # type: ignore[arg-type]
    if status is None:
        code = err.code() if hasattr(err, "code") else grpc.StatusCode.UNKNOWN
        status = status_pb2.Status(code=code.value[0], message=err.details() or "")  # type: ignore[union-attr]
    return RemoteError(status)


def field_violations(status: status_pb2.Status) -> list[FieldViolation]:
    """The BadRequest violations inside a status, for clients and tests."""
    out: list[FieldViolation] = []
    for detail in status.details:
        bad = error_details_pb2.BadRequest()
        if detail.Unpack(bad):
            out.extend(
                FieldViolation(v.field, v.description, v.reason) for v in bad.field_violations
            )
    return out


def error_info(status: status_pb2.Status) -> error_details_pb2.ErrorInfo | None:
    for detail in status.details:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            return info
    return None
