"""Typed errors, and the one place they become ``google.rpc.Status`` (AIP-193).

Domain code raises these; the gRPC interceptor in :mod:`comfyfleet.common.grpcserver` turns
them into statuses with details, so servicers never build a status by hand. Each error says
whether retrying may help (Temporal's ``non_retryable`` idea) for the scheduler's retry logic.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

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
        metadata = {_text(k): _text(v) for k, v in self.metadata.items()}
        info = error_details_pb2.ErrorInfo(reason=self.reason, domain=DOMAIN, metadata=metadata)
        return status_pb2.Status(
            code=self.code, message=_text(self.message), details=[_pack(info), *self.details()]
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
                    field=_text(v.field), description=_text(v.description), reason=v.reason
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
            out.append(_retry_info(self.retry_after_s))
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
    """A dependency cannot be reached now; the same call may succeed after ``retry_after_s``."""

    code = code_pb2.UNAVAILABLE
    reason = "UNAVAILABLE"
    retryable = True

    def __init__(
        self,
        message: str,
        *,
        retry_after_s: float | None = None,
        reason: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message, reason=reason, metadata=metadata)
        self.retry_after_s = retry_after_s

    def details(self) -> list[any_pb2.Any]:
        return [] if self.retry_after_s is None else [_retry_info(self.retry_after_s)]


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


def _text(text: str) -> str:
    """``text`` as protobuf can carry it: a lone surrogate (from a client's JSON ``"\\ud800"``,
    echoed in an error) becomes its escape instead of failing the whole status."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _pack(message: object) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)  # type: ignore[arg-type]
    return packed


def _retry_info(seconds: float) -> any_pb2.Any:
    delay = duration_pb2.Duration()
    delay.FromNanoseconds(int(seconds * 1e9))
    return _pack(error_details_pb2.RetryInfo(retry_delay=delay))


# How long a client should wait before retrying a call that met a dependency going away: a
# restarting PostgreSQL or NATS is usually back within a few seconds.
TRANSIENT_RETRY_AFTER_S = 1.0


def transient_fault(err: BaseException) -> Unavailable | None:
    """An :class:`Unavailable` for an exception that says a dependency is down or restarting
    (a refused or dropped connection to PostgreSQL, NATS or a peer); None for anything else.

    Such failures are worth retrying as they are, so clients must see UNAVAILABLE (gRPC's
    "retry me" code) rather than INTERNAL, which well-behaved clients never retry.
    """
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        what = _transient_kind(current)
        if what is not None:
            return Unavailable(
                f"{what} is unavailable right now; retry the call",
                retry_after_s=TRANSIENT_RETRY_AFTER_S,
                reason="DEPENDENCY_UNAVAILABLE",
            )
        current = current.__cause__ or current.__context__
    return None


def _transient_kind(err: BaseException) -> str | None:
    module = type(err).__module__.split(".")[0]
    name = type(err).__name__
    if module == "asyncpg":
        # Connection loss, server shutdown ("57P01"), startup ("57P03"), too many clients,
        # and a connection reused after it broke ("another operation is in progress").
        sqlstate = getattr(err, "sqlstate", None) or ""
        if name in _ASYNCPG_TRANSIENT or sqlstate.startswith(("08", "57P", "53300")):
            return "the database"
        # InterfaceError also means misuse (too many arguments ...): only a broken or busy
        # connection is transient. InternalClientError's "another operation (2) is in
        # progress" is a connection the server ended (its FATAL read, its close not yet):
        # see comfyfleet.common.db.Pool.
        if name in ("InterfaceError", "InternalClientError") and any(
            m in str(err) for m in _BROKEN_CONNECTION
        ):
            return "the database"
        return None
    if module == "nats" and name in _NATS_TRANSIENT:
        return "the event stream"
    if isinstance(err, ConnectionError | TimeoutError):
        return "a dependency"
    return None


_ASYNCPG_TRANSIENT = frozenset(
    {
        "ConnectionDoesNotExistError",
        "ConnectionFailureError",
        "CannotConnectNowError",
        "PostgresConnectionError",
        "TooManyConnectionsError",
        "AdminShutdownError",
        "CrashShutdownError",
        "ConnectionRejectionError",
    }
)
_BROKEN_CONNECTION = (
    "another operation is in progress",
    "another operation (2) is in progress",
    "connection is closed",
    "pool is closing",
)
_NATS_TRANSIENT = frozenset(
    {
        "ConnectionClosedError",
        "NoServersError",
        "TimeoutError",
        "StaleConnectionError",
        "OutboundBufferLimitError",
        "ServiceUnavailableError",
        "NoRespondersError",
        "FlushTimeoutError",
        "ConnectionReconnectingError",
        "ConnectionDrainingError",
    }
)


def status_of(err: BaseException) -> status_pb2.Status:
    """The status an exception is answered with; unknown exceptions hide their text."""
    if isinstance(err, ComfyfleetError):
        return err.to_status()
    if isinstance(err, NotImplementedError):
        # What a generated servicer base raises for a method the service does not implement.
        return Unimplemented("this method is not implemented by this service").to_status()
    transient = transient_fault(err)
    if transient is not None:
        return transient.to_status()
    return Internal("internal error").to_status()


def to_grpc_status(status: status_pb2.Status) -> grpc.Status:
    """The status as a call's trailers, clipped to fit them (see :func:`bounded_status`)."""
    return rpc_status.to_status(bounded_status(status))


# A status travels in a call's trailers: grpc-message (percent-encoded) and the Status itself
# in grpc-status-details-bin (base64). gRPC clients refuse trailers over 8 KiB now and then
# and over 16 KiB always, as RESOURCE_EXHAUSTED or INTERNAL: a refusal that echoes a large
# request (ten thousand bad nodes, a 200 KB name) would never reach the caller as itself.
# These bounds keep both trailers together under 7 KiB.
MAX_STATUS_MESSAGE_BYTES = 512
MAX_STATUS_BYTES = 4096
# Each violation's field and description, when a status has to be made smaller.
_MAX_VIOLATION_TEXT = 240
TRUNCATED = "TRUNCATED"


def bounded_status(status: status_pb2.Status) -> status_pb2.Status:
    """``status`` clipped to fit a call's trailers, keeping what matters most.

    The message is clipped first. Then, while the status is too large: long violation texts
    are clipped, long ErrorInfo metadata values are dropped (largest first), the last
    violations give way to one ``TRUNCATED`` violation counting them, the rest of the metadata
    goes (reason and domain stay), and finally details of other types. A status that fits is
    returned unchanged.
    """
    message = _clip(status.message, MAX_STATUS_MESSAGE_BYTES)
    if message == status.message and status.ByteSize() <= MAX_STATUS_BYTES:
        return status
    parts = _Parts.unpack(status.details, status.code, message)
    steps: list[Callable[[], None]] = [
        parts.clip_violations,
        lambda: parts.drop_metadata(longer_than=_MAX_VIOLATION_TEXT),
        parts.drop_violations,
        lambda: parts.drop_metadata(longer_than=-1),
        parts.others.clear,
    ]
    for step in steps:
        if parts.size() <= MAX_STATUS_BYTES:
            break
        step()
    return status_pb2.Status(code=status.code, message=message, details=parts.pack())


def _clip(text: str, most_bytes: int) -> str:
    encoded = text.encode("utf-8")
    if len(encoded) <= most_bytes:
        return text
    return encoded[: most_bytes - 3].decode("utf-8", "ignore") + "…"


@dataclass
class _Parts:
    """A status's details, unpacked to be made smaller."""

    code: int
    message: str
    info: error_details_pb2.ErrorInfo | None = None
    bad: error_details_pb2.BadRequest | None = None
    others: list[any_pb2.Any] = field(default_factory=list)

    @classmethod
    def unpack(cls, details: Iterable[any_pb2.Any], code: int, message: str) -> _Parts:
        parts = cls(code, message)
        for detail in details:
            info, bad = error_details_pb2.ErrorInfo(), error_details_pb2.BadRequest()
            if parts.info is None and detail.Unpack(info):
                parts.info = info
            elif parts.bad is None and detail.Unpack(bad):
                parts.bad = bad
            else:
                parts.others.append(detail)
        return parts

    def pack(self) -> list[any_pb2.Any]:
        found = [] if self.info is None else [_pack(self.info)]
        found += [] if self.bad is None else [_pack(self.bad)]
        return found + self.others

    def size(self) -> int:
        status = status_pb2.Status(code=self.code, message=self.message, details=self.pack())
        return status.ByteSize()

    def clip_violations(self) -> None:
        for v in [] if self.bad is None else self.bad.field_violations:
            v.field = _clip(v.field, _MAX_VIOLATION_TEXT)
            v.description = _clip(v.description, _MAX_VIOLATION_TEXT)

    def drop_metadata(self, longer_than: int) -> None:
        if self.info is None:
            return
        metadata = self.info.metadata
        for key in sorted(metadata, key=lambda k: len(metadata[k]), reverse=True):
            if self.size() <= MAX_STATUS_BYTES or len(metadata[key]) <= longer_than:
                return
            del metadata[key]

    def drop_violations(self) -> None:
        if self.bad is None:
            return
        violations = list(self.bad.field_violations)
        kept = len(violations)
        while kept > 0:
            self._keep(violations, kept)
            if self.size() <= MAX_STATUS_BYTES:
                return
            # Halve while far over, then one at a time, so ten thousand take a few steps.
            kept = kept // 2 if kept > 64 else kept - 1
        self._keep(violations, 0)

    def _keep(self, violations: list[error_details_pb2.BadRequest.FieldViolation], n: int) -> None:
        left = len(violations) - n
        summary = error_details_pb2.BadRequest.FieldViolation(
            description=f"{left} more violation(s) left out of this error", reason=TRUNCATED
        )
        del self.bad.field_violations[:]  # type: ignore[union-attr]
        self.bad.field_violations.extend([*violations[:n], summary])  # type: ignore[union-attr]


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
