import base64

import asyncpg
import nats.errors
import pytest
from google.rpc import code_pb2, error_details_pb2, status_pb2

from comfyfleet.common.errors import (
    TRANSIENT_RETRY_AFTER_S,
    FieldViolation,
    InvalidArgument,
    error_info,
    field_violations,
    status_of,
    to_grpc_status,
    transient_fault,
)


def test_an_unimplemented_method_is_unimplemented_not_internal() -> None:
    assert status_of(NotImplementedError("Method not implemented!")).code == code_pb2.UNIMPLEMENTED


def test_unknown_exceptions_hide_their_text() -> None:
    status = status_of(RuntimeError("secret path /etc/x"))
    assert status.code == code_pb2.INTERNAL
    assert "secret" not in status.message


def test_typed_errors_keep_their_code() -> None:
    assert status_of(InvalidArgument("bad")).code == code_pb2.INVALID_ARGUMENT


def _retry_delay_s(status: status_pb2.Status) -> float | None:
    for detail in status.details:
        info = error_details_pb2.RetryInfo()
        if detail.Unpack(info):
            return info.retry_delay.seconds + info.retry_delay.nanos / 1e9
    return None


def _chained(outer: BaseException, cause: BaseException) -> BaseException:
    try:
        try:
            raise cause
        except BaseException as inner:
            raise outer from inner
    except BaseException as err:
        return err


@pytest.mark.parametrize(
    "err",
    [
        asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed in the middle"),
        asyncpg.exceptions.CannotConnectNowError("the database system is starting up"),
        asyncpg.exceptions.AdminShutdownError("terminating connection due to administrator"),
        asyncpg.exceptions.TooManyConnectionsError("sorry, too many clients already"),
        asyncpg.exceptions.InterfaceError(
            "cannot perform operation: another operation is in progress"
        ),
        # What a statement meets on a pooled connection whose server sent FATAL and is
        # closing it: asyncpg is still in its error-consuming state (2).
        asyncpg.exceptions.InternalClientError(
            "cannot switch to state 12; another operation (2) is in progress"
        ),
        ConnectionRefusedError(111, "Connect call failed ('127.0.0.1', 5432)"),
        ConnectionResetError(104, "Connection reset by peer"),
        nats.errors.ConnectionClosedError(),
        nats.errors.NoServersError(),
        _chained(RuntimeError("ledger lookup failed"), ConnectionRefusedError(111, "refused")),
    ],
    ids=lambda e: type(e).__name__,
)
def test_a_dependency_going_away_is_unavailable_with_a_retry_delay(err: BaseException) -> None:
    status = status_of(err)
    assert status.code == code_pb2.UNAVAILABLE
    assert _retry_delay_s(status) == TRANSIENT_RETRY_AFTER_S
    assert transient_fault(err) is not None


@pytest.mark.parametrize(
    "err",
    [
        asyncpg.exceptions.InterfaceError("the number of query arguments cannot exceed 32767"),
        asyncpg.exceptions.UniqueViolationError("duplicate key value"),
        asyncpg.exceptions.InternalClientError("unknown error in protocol implementation"),
        ValueError("bad"),
        KeyError("x"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_bugs_stay_internal(err: BaseException) -> None:
    assert status_of(err).code == code_pb2.INTERNAL
    assert transient_fault(err) is None


def _sent(status: status_pb2.Status) -> status_pb2.Status:
    """The status a client decodes from the trailers the server sends for ``status``."""
    details = dict(to_grpc_status(status).trailing_metadata)["grpc-status-details-bin"]
    return status_pb2.Status.FromString(details)


def _trailer_bytes(status: status_pb2.Status) -> int:
    """What the status takes in a call's trailers: grpc-message and grpc-status-details-bin."""
    sent = to_grpc_status(status)
    encoded = sum(len(key) + len(base64.b64encode(value)) for key, value in sent.trailing_metadata)
    return len(sent.details.encode()) * 3 + encoded


def test_a_status_too_large_for_trailers_keeps_its_code_and_first_violations() -> None:
    # A client refuses trailers over 8 KiB at random and over 16 KiB always: a refusal that
    # echoes the request (ten thousand bad nodes, a 200 KB name) must still arrive as itself.
    violations = [FieldViolation(f'workflow["{i}"].inputs.x', "y" * 300) for i in range(10_000)]
    err = InvalidArgument(
        "the workflow is not valid: " + "z" * 100_000,
        violations,
        reason="INVALID_WORKFLOW",
        metadata={"comfyui_node_errors": "{" + " " * 100_000 + "}", "small": "kept"},
    )
    status = _sent(err.to_status())
    assert _trailer_bytes(err.to_status()) < 8192
    assert status.code == code_pb2.INVALID_ARGUMENT
    assert status.message.startswith("the workflow is not valid: zzz")
    kept = field_violations(status)
    assert kept[0].field == 'workflow["0"].inputs.x' and kept[0].description.startswith("yyy")
    assert kept[-1].reason == "TRUNCATED" and "more" in kept[-1].description
    info = error_info(status)
    assert info is not None and info.reason == "INVALID_WORKFLOW"
    assert dict(info.metadata) == {"small": "kept"}
    small = InvalidArgument("bad", [FieldViolation("a", "b", "C")], metadata={"k": "v"})
    assert _sent(small.to_status()) == small.to_status()


def test_lone_surrogates_in_error_texts_are_escaped_not_fatal() -> None:
    # Text decoded from a client's JSON (a "\ud800" escape) may end up in an error message.
    err = InvalidArgument(
        "bad \ud800",
        [FieldViolation('workflow["\udc00"]', "is \ud800", "X")],
        metadata={"k": "\ud800"},
    )
    status = err.to_status()
    assert status.message == "bad \\ud800"
    assert field_violations(status)[0].field == 'workflow["\\udc00"]'
    assert error_info(status).metadata["k"] == "\\ud800"  # type: ignore[union-attr]
