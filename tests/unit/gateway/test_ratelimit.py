"""GCRA: bursts, the steady rate, exact retry delays, and the limit chosen per key/tenant."""

from __future__ import annotations

import pytest
from google.rpc import error_details_pb2

from comfyfleet.common.errors import ResourceExhausted
from services.gateway.ratelimit import UNLIMITED, Gcra, RateLimit, choose


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_burst_passes_then_the_next_request_waits_one_interval() -> None:
    clock = Clock()
    gcra = Gcra(clock=clock)
    limit = RateLimit(2.0, 3)
    assert [gcra.retry_after("k", limit) for _ in range(3)] == [None, None, None]
    assert gcra.retry_after("k", limit) == pytest.approx(0.5)
    clock.now += 0.49
    assert gcra.retry_after("k", limit) == pytest.approx(0.01)
    clock.now += 0.01
    assert gcra.retry_after("k", limit) is None


def test_refusals_do_not_push_the_next_allowed_time() -> None:
    clock = Clock()
    gcra = Gcra(clock=clock)
    limit = RateLimit(1.0, 1)
    assert gcra.retry_after("k", limit) is None
    for _ in range(10):
        assert gcra.retry_after("k", limit) == pytest.approx(1.0)
    clock.now += 1.0
    assert gcra.retry_after("k", limit) is None


def test_steady_rate_is_admitted_indefinitely() -> None:
    clock = Clock()
    gcra = Gcra(clock=clock)
    limit = RateLimit(10.0, 1)
    for _ in range(100):
        assert gcra.retry_after("k", limit) is None
        clock.now += 0.1


def test_keys_are_independent_and_unlimited_always_passes() -> None:
    gcra = Gcra(clock=Clock())
    limit = RateLimit(1.0, 1)
    assert gcra.retry_after("a", limit) is None
    assert gcra.retry_after("b", limit) is None
    assert gcra.retry_after("a", limit) is not None
    assert all(gcra.retry_after("c", UNLIMITED) is None for _ in range(1000))


def test_check_raises_resource_exhausted_with_retry_info_and_quota() -> None:
    gcra = Gcra(clock=Clock())
    limit = RateLimit(4.0, 1)
    gcra.check("k", limit, "api_key:k")
    with pytest.raises(ResourceExhausted) as caught:
        gcra.check("k", limit, "api_key:k")
    status = caught.value.to_status()
    retry = error_details_pb2.RetryInfo()
    quota = error_details_pb2.QuotaFailure()
    assert any(d.Unpack(retry) for d in status.details)
    assert any(d.Unpack(quota) for d in status.details)
    assert retry.retry_delay.ToNanoseconds() == pytest.approx(250_000_000, rel=1e-6)
    assert quota.violations[0].subject == "api_key:k"
    assert caught.value.reason == "RATE_LIMITED"


def test_idle_keys_are_forgotten_when_the_table_is_full() -> None:
    clock = Clock()
    gcra = Gcra(clock=clock, max_keys=10)
    limit = RateLimit(1.0, 1)
    for i in range(10):
        gcra.retry_after(f"old{i}", limit)
    clock.now += 5
    gcra.retry_after("new", limit)
    assert len(gcra._tat) == 1


def test_choose_takes_the_first_level_with_a_rate() -> None:
    default = RateLimit(50.0, 100)
    assert choose([(0.0, 0), (0.0, 0)], default) == default
    assert choose([(0.0, 7), (5.0, 0)], default) == RateLimit(5.0, 5)
    assert choose([(2.0, 9), (5.0, 0)], default) == RateLimit(2.0, 9)
    assert choose([(0.5, 0)], default) == RateLimit(0.5, 1)
