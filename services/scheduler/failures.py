"""What an execution's final error says once its attempts ran out: pure, no I/O.

An executor that dies mid-run (OOM-killed by the kernel, crashed, its machine lost) is an
infrastructure failure like any other and is retried up to ``max_attempts``. When every
attempt ended that way the workflow itself is the likely cause (it takes more memory than the
machine has), and the final error says so, rather than passing on the last transport error.
"""

from __future__ import annotations

from collections.abc import Sequence

from google.rpc import status_pb2

from comfyfleet.common.errors import Unavailable, error_info

# Reasons of attempts whose executor went away during the run, and how the final error
# names each.
EXECUTOR_DEATHS = {
    "EXECUTOR_CONNECTION_LOST": "connection lost",
    "LEASE_EXPIRED": "lease expired",
    "EXECUTOR_LOST": "heartbeats stopped",
    "EXECUTOR_STREAM_ENDED": "stream ended without a result",
}
EXECUTOR_DIED = "EXECUTOR_DIED"


def reason_of(status: status_pb2.Status) -> str:
    info = error_info(status)
    return info.reason if info is not None else ""


def connection_lost(executor_id: str, status: status_pb2.Status) -> status_pb2.Status:
    """The failure of an attempt whose executor's stream broke after it began: the process
    was killed or crashed, or its machine went away (``status`` is the transport's)."""
    return Unavailable(
        f"the connection to executor {executor_id} was lost during the attempt"
        f" (killed, crashed or unreachable): {status.message}",
        reason="EXECUTOR_CONNECTION_LOST",
        metadata={"executor_id": executor_id},
    ).to_status()


def exhausted(errors: Sequence[status_pb2.Status], attempts: int) -> status_pb2.Status:
    """The final error once all ``attempts`` failed, given their errors in order (the last
    one's at least).

    When the executor died during every attempt: UNAVAILABLE ``EXECUTOR_DIED`` counting them.
    Otherwise the last failure's code and details, its message prefixed with the count.
    """
    last = errors[-1]
    died = [reason_of(e) for e in errors if reason_of(e) in EXECUTOR_DEATHS]
    if len(died) == len(errors) == attempts:
        how = EXECUTOR_DEATHS[died[-1]]
        return Unavailable(
            f"the executor died during the attempt {attempts} times (last: {how}): {last.message}",
            reason=EXECUTOR_DIED,
            metadata={"attempts": str(attempts), "last_reason": died[-1]},
        ).to_status()
    out = status_pb2.Status()
    out.CopyFrom(last)
    out.message = f"all {attempts} attempts failed; the last one: {last.message}"
    if died:
        out.message += f" (the executor died during {len(died)} of them)"
    return out
