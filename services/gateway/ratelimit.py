"""Per-key rate limits with GCRA (the generic cell rate algorithm), kept in memory.

GCRA is a token bucket stored as one number per key, the "theoretical arrival time" (TAT):
each request pushes it ``1/rate`` seconds later, and a request is refused while the TAT is
more than ``burst/rate`` seconds ahead of now. Refusals change nothing, and the time until the
next request would pass is exact, which becomes ``RetryInfo`` (and ``Retry-After`` over REST).

The state lives in one gateway process: with several replicas behind a load balancer, each
enforces the limit on the requests it sees.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from comfyfleet.common.config import Settings, setting
from comfyfleet.common.errors import QuotaViolation, ResourceExhausted


@dataclass(frozen=True)
class RateLimit(Settings):
    """``per_second`` requests on average, up to ``burst`` at once; 0 per second: no limit.
    The gateway's default is read from ``COMFYFLEET_GATEWAY_RATE_PER_S`` and ``_BURST``."""

    per_second: float = setting("PER_S")
    burst: int = setting("BURST")

    @property
    def unlimited(self) -> bool:
        return self.per_second <= 0

    def describe(self) -> str:
        return f"{self.per_second:g} requests per second, bursts of {self.burst}"


UNLIMITED = RateLimit(0.0, 1)


def choose(levels: list[tuple[float, int]], default: RateLimit) -> RateLimit:
    """The first level that sets a rate (key, then tenant), else ``default``.

    A level without a burst takes one second's worth of requests.
    """
    for per_second, burst in levels:
        if per_second > 0:
            return RateLimit(per_second, burst or max(1, math.ceil(per_second)))
    return default


class Gcra:
    """The limiter: ``check(key, limit)`` admits a request or raises RESOURCE_EXHAUSTED."""

    def __init__(
        self, *, clock: Callable[[], float] = time.monotonic, max_keys: int = 100_000
    ) -> None:
        self._clock = clock
        self._max_keys = max_keys
        self._tat: dict[str, float] = {}

    def retry_after(self, key: str, limit: RateLimit) -> float | None:
        """Admits one request of ``key`` (None), or says how many seconds until one would pass."""
        if limit.unlimited:
            return None
        now = self._clock()
        interval = 1.0 / limit.per_second
        new_tat = max(self._tat.get(key, now), now) + interval
        allowed_at = new_tat - interval * limit.burst
        if allowed_at > now:
            return allowed_at - now
        self._tat[key] = new_tat
        if len(self._tat) > self._max_keys:
            self._forget_idle(now)
        return None

    def check(self, key: str, limit: RateLimit, subject: str) -> None:
        wait = self.retry_after(key, limit)
        if wait is None:
            return
        raise ResourceExhausted(
            f"rate limit exceeded ({limit.describe()}); retry in {wait:.3f}s",
            retry_after_s=wait,
            quota=[QuotaViolation(subject, f"at most {limit.describe()}")],
            reason="RATE_LIMITED",
        )

    def _forget_idle(self, now: float) -> None:
        """Keys whose TAT has passed are indistinguishable from new ones: drop them."""
        self._tat = {k: tat for k, tat in self._tat.items() if tat > now}
        if len(self._tat) > self._max_keys:
            # Only under a flood of distinct keys: forgetting errs towards admitting.
            self._tat.clear()
