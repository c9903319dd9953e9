"""What happens after an attempt: done, try again later, give up, or disable the subscription."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from enum import Enum


class Verdict(Enum):
    SUCCEEDED = "succeeded"
    RETRY = "retry"
    FAILED = "failed"
    # The receiver answered 410 Gone: it wants no more deliveries at this URL.
    GONE = "gone"


@dataclass(frozen=True)
class AttemptResult:
    """What one POST got: a status (0 when no answer came), and what went wrong."""

    status_code: int
    latency_s: float
    response_excerpt: str = ""
    error: str = ""
    retry_after_s: float | None = None


@dataclass(frozen=True)
class Outcome:
    verdict: Verdict
    # Seconds until the next attempt, for RETRY.
    delay_s: float = 0.0


# Statuses whose Retry-After header asks us to wait (RFC 9110 §10.2.3; 429 from RFC 6585).
RETRY_AFTER_STATUSES = frozenset({429, 503})


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds a Retry-After header asks for: delay-seconds or an HTTP date; None if unusable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


@dataclass(frozen=True)
class RetryPolicy:
    """The pauses between attempts; attempt n+1 waits ``schedule[n-1]`` plus jitter."""

    schedule_s: tuple[float, ...]
    jitter: float = 0.1
    max_retry_after_s: float = 24 * 3600.0

    def delay_after(
        self, attempts: int, retry_after_s: float | None, rng: random.Random
    ) -> float | None:
        """The pause after the ``attempts``-th failed attempt, or None when none is left.

        A Retry-After lengthens the pause (up to a cap) but never shortens it: a receiver
        asking for less than the schedule still gets the schedule's spacing.
        """
        if attempts < 1 or attempts > len(self.schedule_s):
            return None
        base = self.schedule_s[attempts - 1]
        delay = base * (1.0 + rng.uniform(0.0, self.jitter))
        if retry_after_s is not None:
            delay = max(delay, min(retry_after_s, self.max_retry_after_s))
        return delay

    def judge(self, result: AttemptResult, attempts: int, rng: random.Random) -> Outcome:
        """The outcome of an attempt that was the ``attempts``-th of its round."""
        code = result.status_code
        if 200 <= code < 300:
            return Outcome(Verdict.SUCCEEDED)
        if code == 410:
            return Outcome(Verdict.GONE)
        retry_after = result.retry_after_s if code in RETRY_AFTER_STATUSES else None
        delay = self.delay_after(attempts, retry_after, rng)
        if delay is None:
            return Outcome(Verdict.FAILED)
        return Outcome(Verdict.RETRY, delay)
