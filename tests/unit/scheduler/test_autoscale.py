"""Autoscaling decisions with the source design's defaults, on a clock the test sets."""

from __future__ import annotations

import pytest

from comfyfleet.common.config import ConfigError
from services.scheduler.autoscale import (
    Decision,
    ProviderView,
    ScalePolicy,
    ScaleState,
    Signals,
    decide,
    plan,
)

P = ScalePolicy()
T0 = 1_000_000.0
# Work went on until now, and the last change was long ago.
BUSY_LATELY = ScaleState(last_up_at=T0 - 3600, last_down_at=T0 - 3600, last_active_at=T0)


def at(
    replicas: int,
    depth: int = 0,
    wait: float = 0.0,
    busy: int = 0,
    state: ScaleState = BUSY_LATELY,
    now: float = T0,
    policy: ScalePolicy = P,
) -> Decision:
    return decide(policy, Signals(depth, wait, replicas, busy), state, now)


def test_the_defaults_are_the_source_designs() -> None:
    assert (P.target_queue_depth, P.scale_up_queue_depth, P.scale_down_queue_depth) == (5, 10, 2)
    assert (P.target_wait_s, P.scale_up_wait_s, P.scale_down_wait_s) == (30, 60, 15)
    assert (P.scale_up_window_s, P.scale_up_step) == (60, 2)
    assert (P.scale_down_window_s, P.scale_down_step) == (300, 1)
    assert (P.warm_pool, P.max_idle_s, P.scale_to_zero) == (3, 600, True)


def test_work_arriving_at_zero_replicas_brings_up_the_warm_pool_at_once() -> None:
    decision = at(0, depth=1, state=ScaleState())
    assert decision.desired == 3
    assert decision.reason == "1 waiting and no replica: +3"
    assert decision.state.last_up_at == T0 and decision.state.last_active_at == T0


def test_a_deep_queue_adds_two_replicas_per_window() -> None:
    first = at(4, depth=60)  # 15 per replica, 12 wanted
    assert (first.desired, first.reason) == (
        6,
        "queue depth 15 per replica at or above 10: +2",
    )
    too_soon = at(6, depth=60, state=first.state, now=T0 + 59)
    assert (too_soon.desired, too_soon.reason) == (6, "steady")
    later = at(6, depth=60, state=first.state, now=T0 + 60)
    assert later.desired == 8


def test_scaling_up_stops_at_what_the_queue_needs_and_at_the_maximum() -> None:
    assert at(4, depth=45).desired == 6, "ceil(45 / 5) = 9 wanted, +2 allowed"
    assert at(9, depth=95).desired == 10, "ceil(95 / 5) = 19 wanted, 10 at most"
    assert at(10, depth=500).desired == 10


def test_a_long_wait_adds_a_replica_even_with_a_short_queue() -> None:
    decision = at(4, depth=8, wait=75)
    assert (decision.desired, decision.reason) == (
        6,
        "oldest wait 75s at or above 60s: +2",
    )


def test_between_the_thresholds_nothing_changes() -> None:
    assert at(4, depth=20, wait=30).desired == 4  # 5 per replica, 30 s: on target
    assert at(4, depth=12, wait=20).desired == 4  # 3 per replica: above the down level


def test_a_quiet_queue_removes_one_replica_per_window_down_to_the_warm_pool() -> None:
    first = at(6, depth=4, wait=5)
    assert (first.desired, first.state.last_down_at) == (5, T0)
    assert at(5, depth=4, wait=5, state=first.state, now=T0 + 299).desired == 5
    assert at(5, depth=4, wait=5, state=first.state, now=T0 + 300).desired == 4
    assert at(3, depth=0).desired == 3, "the warm pool stays while there was work"


def test_no_scale_down_right_after_a_scale_up() -> None:
    state = ScaleState(last_up_at=T0 - 100, last_down_at=None, last_active_at=T0)
    assert at(6, depth=1, state=state).desired == 6
    assert at(6, depth=1, state=state, now=T0 + 200).desired == 5


def test_busy_replicas_are_never_scaled_away() -> None:
    assert at(6, depth=0, busy=6).desired == 6
    assert at(6, depth=0, busy=5).desired == 5


def test_after_max_idle_without_work_it_scales_to_zero() -> None:
    idle = ScaleState(last_up_at=T0 - 3600, last_down_at=T0 - 3600, last_active_at=T0 - 599)
    assert at(3, state=idle).desired == 3
    later = at(3, state=idle, now=T0 + 1)
    assert (later.desired, later.reason) == (0, "no work for 600s: down to 0")
    keep_one = ScalePolicy(min_replicas=1)
    assert at(3, state=idle, now=T0 + 1, policy=keep_one).desired == 1
    never_zero = ScalePolicy(scale_to_zero=False)
    assert at(3, state=idle, now=T0 + 1, policy=never_zero).desired == 3


def test_a_fresh_system_without_work_stays_at_zero() -> None:
    assert at(0, state=ScaleState()).desired == 0


@pytest.mark.parametrize(
    "changes",
    [
        {"min_replicas": 5, "max_replicas": 4},
        {"scale_up_step": 0},
        {"warm_pool": -1},
        {"scale_down_queue_depth": 6},
        {"target_queue_depth": 0, "scale_down_queue_depth": 0},
        {"scale_up_wait_s": 10},
    ],
)
def test_policies_that_contradict_themselves_are_refused(changes: dict[str, float]) -> None:
    with pytest.raises(ConfigError):
        ScalePolicy(**changes)  # type: ignore[arg-type]


def view(name: str, price: float, *, healthy: bool = True, replicas: int = 0) -> ProviderView:
    return ProviderView(name, price, healthy, replicas, 0, P, ScaleState())


def test_the_cheapest_healthy_provider_takes_the_queue() -> None:
    decisions = plan([view("ecs", 1.0), view("runpod", 0.7)], 1, 0.0, T0)
    assert (decisions["runpod"].desired, decisions["ecs"].desired) == (3, 0)


def test_when_the_cheap_provider_is_broken_the_other_scales() -> None:
    decisions = plan([view("ecs", 1.0), view("runpod", 0.7, healthy=False)], 1, 0.0, T0)
    assert (decisions["runpod"].desired, decisions["ecs"].desired) == (0, 3)


def test_what_the_cheapest_cannot_take_spills_to_the_next() -> None:
    full = ProviderView("runpod", 0.7, True, 10, 10, P, BUSY_LATELY)
    decisions = plan([full, view("ecs", 1.0, replicas=2)], 80, 90.0, T0)
    assert decisions["runpod"].desired == 10
    assert decisions["ecs"].desired == 4, "30 of 80 spill over: +2"
