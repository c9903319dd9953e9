"""Circuit breakers on a clock the test moves by hand."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from comfyfleet.common.config import ConfigError
from services.scheduler.breaker import (
    BreakerPolicy,
    Breakers,
    BreakerState,
    CircuitBreaker,
    Permit,
    Scope,
    Transition,
)

POLICY = BreakerPolicy(
    window_s=10.0,
    minimum_calls=4,
    failure_rate=0.5,
    slow_call_s=2.0,
    slow_call_rate=0.75,
    open_wait_s=5.0,
    half_open_probes=2,
    half_open_max_s=30.0,
)
CLOSED, OPEN, HALF_OPEN = BreakerState.CLOSED, BreakerState.OPEN, BreakerState.HALF_OPEN


@dataclass
class Clock:
    now: float = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Harness:
    clock: Clock = field(default_factory=Clock)
    seen: list[Transition] = field(default_factory=list)

    def breaker(self, policy: BreakerPolicy = POLICY) -> CircuitBreaker:
        return CircuitBreaker("provider/runpod", policy, self.clock, self.clock, self.seen.append)

    def moves(self) -> list[tuple[BreakerState, BreakerState]]:
        return [(t.source, t.target) for t in self.seen]


def permit(breaker: CircuitBreaker) -> Permit:
    got = breaker.try_acquire()
    assert got is not None, f"{breaker.name} refused a call in state {breaker.state}"
    return got


def calls(breaker: CircuitBreaker, *outcomes: str) -> None:
    """Makes one call per outcome: "ok", "fail" or "slow"."""
    for outcome in outcomes:
        p = permit(breaker)
        if outcome == "fail":
            p.failure(0.1)
        else:
            p.success(POLICY.slow_call_s + 1 if outcome == "slow" else 0.1)


def open_breaker(h: Harness) -> CircuitBreaker:
    breaker = h.breaker()
    calls(breaker, "fail", "fail", "ok", "fail")
    assert breaker.state is OPEN
    return breaker


def test_failures_below_the_minimum_number_of_calls_do_not_trip() -> None:
    breaker = Harness().breaker()
    calls(breaker, "fail", "fail", "fail")
    assert breaker.state is CLOSED
    snap = breaker.snapshot()
    assert (snap.calls, snap.failures, snap.failure_rate) == (3, 3, 1.0)


def test_the_failure_rate_trips_once_the_window_holds_enough_calls() -> None:
    h = Harness()
    breaker = h.breaker()
    calls(breaker, "ok", "fail", "ok")
    calls(breaker, "fail")
    assert breaker.state is OPEN
    [moved] = h.seen
    assert (moved.source, moved.target, moved.breaker) == (CLOSED, OPEN, "provider/runpod")
    assert moved.reason == "2 of 4 calls failed in the last 10s"
    assert moved.at == h.clock.now


def test_a_failure_rate_under_the_threshold_keeps_it_closed() -> None:
    breaker = Harness().breaker()
    calls(breaker, "ok", "ok", "fail", "ok", "ok", "ok", "fail", "ok")
    assert breaker.state is CLOSED
    assert breaker.snapshot().failure_rate == 0.25


def test_failures_older_than_the_window_no_longer_count() -> None:
    h = Harness()
    breaker = h.breaker()
    calls(breaker, "fail", "fail", "fail")
    h.clock.advance(POLICY.window_s + 0.1)
    calls(breaker, "ok", "ok", "ok", "fail")
    assert breaker.state is CLOSED
    assert breaker.snapshot().calls == 4


def test_slow_calls_trip_it_too() -> None:
    h = Harness()
    breaker = h.breaker()
    calls(breaker, "slow", "slow", "ok", "slow")
    assert breaker.state is OPEN
    assert h.seen[0].reason == "3 of 4 calls were slower than 2s to start in the last 10s"


def test_an_open_breaker_refuses_calls_until_its_wait_is_over() -> None:
    h = Harness()
    breaker = open_breaker(h)
    assert breaker.try_acquire() is None
    assert not breaker.available()
    h.clock.advance(2.0)
    assert breaker.retry_in_s() == pytest.approx(3.0)
    assert breaker.try_acquire() is None
    assert breaker.snapshot().rejected == 2
    h.clock.advance(3.0)
    assert breaker.available()
    probe = permit(breaker)
    assert probe.probe and breaker.state is HALF_OPEN
    assert breaker.retry_in_s() is None
    assert h.moves() == [(CLOSED, OPEN), (OPEN, HALF_OPEN)]


def test_half_open_lets_a_bounded_number_of_probes_through() -> None:
    h = Harness()
    breaker = open_breaker(h)
    h.clock.advance(POLICY.open_wait_s)
    first, second = permit(breaker), permit(breaker)
    assert breaker.try_acquire() is None
    assert not breaker.available()
    assert breaker.snapshot().probes_in_flight == 2
    first.success(0.1)
    assert breaker.try_acquire() is None, "a probe that reported is still one of the probes"
    second.success(0.1)
    assert breaker.state is CLOSED
    assert breaker.snapshot().calls == 0, "closing starts an empty window"
    assert h.moves() == [(CLOSED, OPEN), (OPEN, HALF_OPEN), (HALF_OPEN, CLOSED)]
    assert h.seen[-1].reason == "2 probes succeeded"


def test_a_failed_probe_opens_it_again_at_once() -> None:
    h = Harness()
    breaker = open_breaker(h)
    h.clock.advance(POLICY.open_wait_s)
    first, second = permit(breaker), permit(breaker)
    first.failure(0.1)
    assert breaker.state is OPEN
    assert h.seen[-1].reason == "probes: 1 of 2 calls failed"
    second.success(0.1)
    assert breaker.state is OPEN, "a probe of the last round decides nothing now"
    assert breaker.try_acquire() is None


def test_slow_probes_open_it_again() -> None:
    h = Harness()
    breaker = open_breaker(h)
    h.clock.advance(POLICY.open_wait_s)
    calls(breaker, "slow")
    assert breaker.state is HALF_OPEN
    calls(breaker, "slow")
    assert breaker.state is OPEN


def test_a_released_probe_makes_room_for_another() -> None:
    h = Harness()
    breaker = open_breaker(h)
    h.clock.advance(POLICY.open_wait_s)
    first, _second = permit(breaker), permit(breaker)
    first.release()
    first.release()  # releasing twice gives back one permit
    third = permit(breaker)
    assert breaker.try_acquire() is None
    assert third.probe


def test_probes_that_never_report_back_open_it_again() -> None:
    h = Harness()
    breaker = open_breaker(h)
    h.clock.advance(POLICY.open_wait_s)
    permit(breaker)
    h.clock.advance(POLICY.half_open_max_s)
    assert breaker.state is HALF_OPEN
    assert breaker.snapshot().state is OPEN
    assert h.seen[-1].reason == "probes did not report back within 30s"


def test_outcomes_of_calls_admitted_before_it_opened_do_not_decide() -> None:
    h = Harness()
    breaker = h.breaker()
    early = permit(breaker)
    calls(breaker, "fail", "fail", "fail", "fail")
    assert breaker.state is OPEN
    early.success(0.1)
    assert breaker.state is OPEN
    h.clock.advance(POLICY.open_wait_s)
    late = permit(breaker)
    stale = Permit(breaker, epoch=0, probe=False)
    stale.success(0.1)
    assert breaker.state is HALF_OPEN, "a call from the closed days is not a probe"
    late.success(0.1)
    calls(breaker, "ok")
    assert breaker.state is CLOSED


def test_an_attempt_broken_after_it_started_turns_its_call_into_a_failure() -> None:
    breaker = Harness().breaker()
    calls(breaker, "ok", "ok")
    started = permit(breaker)
    started.success(0.1)
    started.failure(5.0)
    started.failure(5.0)  # one call fails once
    snap = breaker.snapshot()
    assert (snap.calls, snap.failures) == (3, 1)
    assert breaker.state is CLOSED
    other = permit(breaker)
    other.success(0.1)
    other.failure(0.1)
    assert breaker.state is OPEN, "2 failed of 4 calls"


def test_a_call_that_turns_bad_after_it_left_the_window_counts_for_nothing() -> None:
    h = Harness()
    breaker = h.breaker()
    started = permit(breaker)
    started.success(0.1)
    h.clock.advance(POLICY.window_s + 0.1)
    calls(breaker, "ok", "slow", "fail")
    started.failure(POLICY.window_s + 1)
    snap = breaker.snapshot()
    assert (snap.calls, snap.failures, snap.slow) == (3, 1, 1)
    calls(breaker, "ok")
    assert breaker.state is CLOSED, "1 failed of 4 calls"
    h.clock.advance(POLICY.window_s + 0.1)
    snap = breaker.snapshot()
    assert (snap.calls, snap.failures, snap.slow) == (0, 0, 0)


def test_a_call_that_turns_bad_after_the_breaker_moved_on_is_news() -> None:
    h = Harness()
    breaker = open_breaker(h)
    h.clock.advance(POLICY.open_wait_s)
    first, second = permit(breaker), permit(breaker)
    first.success(0.1)
    second.success(0.1)
    assert breaker.state is CLOSED
    first.failure(3.0)
    snap = breaker.snapshot()
    assert (snap.state, snap.calls, snap.failures) == (CLOSED, 1, 1)


def test_a_probe_that_started_then_broke_reopens_it() -> None:
    h = Harness()
    breaker = open_breaker(h)
    h.clock.advance(POLICY.open_wait_s)
    probe, _other = permit(breaker), permit(breaker)
    probe.success(0.1)
    assert breaker.state is HALF_OPEN
    probe.failure(1.0)
    assert breaker.state is OPEN
    assert h.seen[-1].reason == "probes: 1 of 2 calls failed"


def test_policies_are_checked() -> None:
    with pytest.raises(ConfigError):
        BreakerPolicy(minimum_calls=0)
    with pytest.raises(ConfigError):
        BreakerPolicy(failure_rate=1.5)
    with pytest.raises(ConfigError):
        BreakerPolicy(slow_call_rate=0)
    with pytest.raises(ConfigError):
        BreakerPolicy(open_wait_s=0)


def board(h: Harness) -> Breakers:
    return Breakers(POLICY, POLICY, h.clock, h.clock, h.seen.append)


def test_an_open_provider_breaker_stops_every_executor_of_the_provider() -> None:
    h = Harness()
    breakers = board(h)
    for n in range(4):
        got = breakers.acquire("runpod", f"ex-{n}")
        assert got is not None
        got.failure(0.1)
    assert breakers.get(Scope.PROVIDER, "runpod").state is OPEN
    assert all(breakers.get(Scope.EXECUTOR, f"ex-{n}").state is CLOSED for n in range(4))
    assert not breakers.available("runpod", "ex-new")
    assert breakers.acquire("runpod", "ex-new") is None
    assert breakers.available("ecs", "ex-new")
    assert breakers.next_probe_in_s() == POLICY.open_wait_s


def test_a_refusal_of_either_breaker_holds_no_permit_of_the_other() -> None:
    h = Harness()
    breakers = board(h)
    executor = breakers.get(Scope.EXECUTOR, "ex-1")
    calls(executor, "fail", "fail", "fail", "fail")
    h.clock.advance(POLICY.open_wait_s)
    calls(executor, "ok")  # one of two probes used: one left
    provider = breakers.get(Scope.PROVIDER, "local")
    assert breakers.acquire("local", "ex-1") is not None
    assert breakers.acquire("local", "ex-1") is None
    assert provider.snapshot().calls == 0
    assert provider.snapshot().in_flight == 1, "only the admitted attempt holds a provider permit"


def test_a_permit_pair_settles_both_breakers() -> None:
    h = Harness()
    breakers = board(h)
    got = breakers.acquire("ecs", "ex-1")
    assert got is not None
    got.failure(0.5)
    assert got.settled
    snaps = {s.name: s for s in breakers.snapshots()}
    assert sorted(snaps) == ["executor/ex-1", "provider/ecs"]
    assert snaps["executor/ex-1"].failures == snaps["provider/ecs"].failures == 1


def test_idle_executor_breakers_are_forgotten_busy_ones_kept() -> None:
    h = Harness()
    breakers = board(h)
    done = breakers.acquire("local", "ex-done")
    busy = breakers.acquire("local", "ex-busy")
    assert done is not None and busy is not None
    done.success(0.1)
    h.clock.advance(POLICY.window_s + 1)
    breakers.prune()
    assert [s.name for s in breakers.snapshots()] == ["executor/ex-busy", "provider/local"]


def test_a_breaker_that_just_closed_stays_listed_for_a_window() -> None:
    h = Harness()
    breakers = board(h)
    executor = breakers.get(Scope.EXECUTOR, "ex-1")
    calls(executor, "fail", "fail", "fail", "fail")
    h.clock.advance(POLICY.open_wait_s)
    calls(executor, "ok", "ok")
    assert executor.state is CLOSED
    breakers.prune()
    assert "executor/ex-1" in [s.name for s in breakers.snapshots()]
    h.clock.advance(POLICY.window_s)
    breakers.prune()
    assert "executor/ex-1" not in [s.name for s in breakers.snapshots()]
