"""Budget periods and the refusal a spent budget gives."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from google.rpc import code_pb2, error_details_pb2

from comfyfleet.common.errors import InvalidArgument
from services.scheduler.budgets import Budget, check_budget_request, month_of


def test_a_month_runs_from_its_first_moment_to_the_next_months_in_utc() -> None:
    start, end = month_of(datetime(2026, 12, 31, 23, 30, tzinfo=UTC))
    assert (start, end) == (datetime(2026, 12, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC))
    # 00:30 on March 1st in UTC+2 is still February in UTC.
    local = datetime(2026, 3, 1, 0, 30, tzinfo=timezone(timedelta(hours=2)))
    assert month_of(local)[0] == datetime(2026, 2, 1, tzinfo=UTC)


def test_a_budget_is_spent_once_spending_reaches_its_limit() -> None:
    start, end = month_of(datetime(2026, 5, 20, tzinfo=UTC))
    assert not Budget("t", 10.0, 9.99, start, end).exhausted
    assert Budget("t", 10.0, 10.0, start, end).exhausted
    assert not Budget("t", 0.0, 1e9, start, end).exhausted, "0 means no limit"


def test_the_refusal_names_the_quota_and_when_to_come_back() -> None:
    now = datetime(2026, 5, 31, 12, tzinfo=UTC)
    start, end = month_of(now)
    status = Budget("t-1", 50.0, 51.25, start, end).refusal(now).to_status()
    assert status.code == code_pb2.RESOURCE_EXHAUSTED
    assert "$50.00" in status.message and "$51.25" in status.message
    quota, retry = error_details_pb2.QuotaFailure(), error_details_pb2.RetryInfo()
    assert any(d.Unpack(quota) for d in status.details)
    assert any(d.Unpack(retry) for d in status.details)
    assert quota.violations[0].subject == "tenant:t-1"
    assert retry.retry_delay.seconds == 12 * 3600


@pytest.mark.parametrize(("tenant", "limit"), [("", 1.0), ("t", -0.01), ("t", float("inf"))])
def test_bad_budgets_are_refused(tenant: str, limit: float) -> None:
    with pytest.raises(InvalidArgument):
        check_budget_request(tenant, limit)
