import asyncpg
import nats.errors
import pytest
from google.rpc import code_pb2, error_details_pb2, status_pb2

from comfyfleet.common.errors import (
    TRANSIENT_RETRY_AFTER_S,
    InvalidArgument,
    status_of,
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
        ValueError("bad"),
        KeyError("x"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_bugs_stay_internal(err: BaseException) -> None:
    assert status_of(err).code == code_pb2.INTERNAL
    assert transient_fault(err) is None
