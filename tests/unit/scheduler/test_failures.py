"""The final error once attempts ran out: an executor that died every time is named as such."""

from __future__ import annotations

from google.rpc import code_pb2, status_pb2

from comfyfleet.common.errors import Unavailable, error_info
from services.scheduler.failures import EXECUTOR_DIED, connection_lost, exhausted, reason_of


def lease_expired() -> status_pb2.Status:
    return Unavailable("attempt 2 lost its lease", reason="LEASE_EXPIRED").to_status()


def transport(message: str = "Socket closed") -> status_pb2.Status:
    return status_pb2.Status(code=code_pb2.UNAVAILABLE, message=message)


def test_a_broken_stream_is_a_lost_connection_naming_the_executor() -> None:
    status = connection_lost("executor-a", transport())

    assert status.code == code_pb2.UNAVAILABLE
    assert reason_of(status) == "EXECUTOR_CONNECTION_LOST"
    assert status.message == (
        "the connection to executor executor-a was lost during the attempt"
        " (killed, crashed or unreachable): Socket closed"
    )


def test_an_executor_that_died_every_time_is_the_reason() -> None:
    errors = [connection_lost("executor-a", transport()), lease_expired()]

    status = exhausted(errors, 2)

    assert status.code == code_pb2.UNAVAILABLE
    assert status.message == (
        "the executor died during the attempt 2 times (last: lease expired):"
        " attempt 2 lost its lease"
    )
    info = error_info(status)
    assert info is not None and info.reason == EXECUTOR_DIED
    assert dict(info.metadata) == {"attempts": "2", "last_reason": "LEASE_EXPIRED"}


def test_other_failures_keep_the_last_ones_code_and_say_how_many_deaths() -> None:
    gpu = Unavailable("GPU fell off the bus", reason="GPU_LOST").to_status()

    mixed = exhausted([connection_lost("executor-a", transport()), gpu], 2)
    plain = exhausted([gpu], 3)

    assert reason_of(mixed) == "GPU_LOST"
    assert mixed.message == (
        "all 2 attempts failed; the last one: GPU fell off the bus"
        " (the executor died during 1 of them)"
    )
    # Errors of earlier attempts unknown: only the last one's counts, never as every attempt.
    assert plain.message == "all 3 attempts failed; the last one: GPU fell off the bus"
    assert exhausted([lease_expired()], 3).message.startswith("all 3 attempts failed")
