"""Which failed calls the SDK makes again, and how long it waits before each try.

UNAVAILABLE is gRPC's "try again": the platform, or a database or event stream behind it,
could not serve the call just now (a restart, a dropped connection). Every other code is an
answer the same call would get again. A call is repeated as it was sent: reads as they are,
and creates under the ``request_id`` the SDK gives each one that lacks it, so a create the
platform did serve before its answer was lost returns the first result instead of a second
resource.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass

from google.protobuf import message
from google.rpc import code_pb2

from comfyfleet.sdk.errors import ApiError

REQUEST_ID_FIELD = "request_id"


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded retries with exponential back-off and full jitter.

    The wait before try ``n + 1`` is a random share of ``initial_backoff_s * multiplier **
    (n - 1)``, at most ``max_backoff_s``; when the platform said how long to wait
    (``RetryInfo``, REST's ``Retry-After``), at least that. After ``max_attempts`` tries, or
    when the platform asks for a wait longer than ``max_wait_s``, the error is raised.
    """

    max_attempts: int = 8
    initial_backoff_s: float = 0.25
    max_backoff_s: float = 5.0
    multiplier: float = 2.0
    max_wait_s: float = 30.0
    codes: frozenset[int] = frozenset({code_pb2.UNAVAILABLE})

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.initial_backoff_s < 0 or self.max_backoff_s < 0 or self.multiplier < 1:
            raise ValueError("back-offs must be >= 0 and the multiplier >= 1")

    def wait_before_retry(
        self, attempt: int, error: ApiError, rand: random.Random | None = None
    ) -> float | None:
        """Seconds to wait before try ``attempt + 1`` after ``error`` ended try ``attempt``;
        None when the error is not retried or the tries are spent."""
        if error.status.code not in self.codes or attempt >= self.max_attempts:
            return None
        ceiling = min(self.max_backoff_s, self.initial_backoff_s * self.multiplier ** (attempt - 1))
        wait = (rand or random).uniform(0.0, ceiling)
        asked = error.retry_after_s
        if asked is not None:
            if asked > self.max_wait_s:
                return None
            wait = max(wait, asked)
        return wait


NO_RETRY = RetryPolicy(max_attempts=1)


def new_request_id() -> str:
    """A request_id for a create whose caller gave none."""
    return f"sdk-{uuid.uuid4()}"


def with_request_id(request: message.Message) -> message.Message:
    """Gives a create request without a ``request_id`` a fresh one (in place), so that its
    retries are answered with the first result; other requests are left as they are."""
    fields = request.DESCRIPTOR.fields_by_name
    if REQUEST_ID_FIELD in fields and not getattr(request, REQUEST_ID_FIELD):
        setattr(request, REQUEST_ID_FIELD, new_request_id())
    return request
