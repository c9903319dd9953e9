"""The retry schedule, jitter, Retry-After, and what each answer leads to."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from services.webhook.config import DEFAULT_RETRY_SCHEDULE, parse_schedule
from services.webhook.retry import AttemptResult, RetryPolicy, Verdict, parse_retry_after

SCHEDULE = parse_schedule(DEFAULT_RETRY_SCHEDULE)
POLICY = RetryPolicy(SCHEDULE, jitter=0.1, max_retry_after_s=3600.0)
NOW = datetime(2025, 1, 1, tzinfo=UTC)


def test_default_schedule_is_standard_webhooks() -> None:
    assert SCHEDULE == (5, 300, 1800, 7200, 18000, 36000, 36000)


@pytest.mark.parametrize("attempts", range(1, len(SCHEDULE) + 1))
def test_each_retry_waits_its_step_plus_at_most_the_jitter(attempts: int) -> None:
    base = SCHEDULE[attempts - 1]
    delays = [POLICY.delay_after(attempts, None, random.Random(seed)) for seed in range(50)]
    assert all(d is not None and base <= d <= base * 1.1 for d in delays)
    assert len(set(delays)) > 1  # jittered, not constant


def test_no_retry_after_the_schedule_ends() -> None:
    assert POLICY.delay_after(len(SCHEDULE) + 1, None, random.Random(1)) is None
    assert POLICY.delay_after(0, None, random.Random(1)) is None


def test_retry_after_lengthens_but_never_shortens_and_is_capped() -> None:
    rng = random.Random(3)
    assert POLICY.delay_after(1, 120.0, rng) == 120.0
    delay = POLICY.delay_after(2, 1.0, rng)
    assert delay is not None and delay >= 300
    assert POLICY.delay_after(1, 10**9, rng) == 3600.0


@pytest.mark.parametrize(
    ("status", "verdict"),
    [
        (200, Verdict.SUCCEEDED),
        (204, Verdict.SUCCEEDED),
        (299, Verdict.SUCCEEDED),
        (301, Verdict.RETRY),
        (304, Verdict.RETRY),
        (400, Verdict.RETRY),
        (410, Verdict.GONE),
        (429, Verdict.RETRY),
        (500, Verdict.RETRY),
        (0, Verdict.RETRY),
    ],
)
def test_verdict_by_status(status: int, verdict: Verdict) -> None:
    outcome = POLICY.judge(AttemptResult(status, 0.01), 1, random.Random(0))
    assert outcome.verdict is verdict


def test_the_last_failed_attempt_fails_the_delivery() -> None:
    last = POLICY.judge(AttemptResult(500, 0.01), len(SCHEDULE) + 1, random.Random(0))
    assert last.verdict is Verdict.FAILED


@pytest.mark.parametrize(("status", "honoured"), [(429, True), (503, True), (500, False)])
def test_retry_after_counts_on_429_and_503_only(status: int, honoured: bool) -> None:
    result = AttemptResult(status, 0.01, retry_after_s=600.0)
    outcome = POLICY.judge(result, 1, random.Random(0))
    assert (outcome.delay_s == 600.0) == honoured


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("120", 120.0),
        (" 7 ", 7.0),
        (format_datetime(NOW + timedelta(seconds=90), usegmt=True), 90.0),
        (format_datetime(NOW - timedelta(seconds=90), usegmt=True), 0.0),
        ("soon", None),
        ("-5", None),
        ("", None),
        (None, None),
    ],
)
def test_parse_retry_after(header: str | None, seconds: float | None) -> None:
    assert parse_retry_after(header, NOW) == seconds
