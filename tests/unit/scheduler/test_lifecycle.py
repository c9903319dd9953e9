"""The state machine, the attempt fence and retry backoff."""

from __future__ import annotations

import pytest

from services.scheduler.lifecycle import (
    TERMINAL,
    Backoff,
    GiveUp,
    IllegalTransition,
    Retry,
    State,
    accepts_update,
    after_infrastructure_failure,
    check_transition,
)


@pytest.mark.parametrize("terminal", sorted(TERMINAL))
@pytest.mark.parametrize("target", list(State))
def test_terminal_states_are_final(terminal: State, target: State) -> None:
    with pytest.raises(IllegalTransition):
        check_transition(terminal, target)


@pytest.mark.parametrize(
    ("current", "target"),
    [
        (State.QUEUED, State.DISPATCHED),
        (State.DISPATCHED, State.RUNNING),
        (State.RUNNING, State.SUCCEEDED),
        (State.RUNNING, State.RETRYING),
        (State.RETRYING, State.DISPATCHED),
        (State.QUEUED, State.CANCELLED),
        (State.RUNNING, State.CANCELLED),
        (State.QUEUED, State.FAILED),
    ],
)
def test_lifecycle_transitions_are_allowed(current: State, target: State) -> None:
    check_transition(current, target)


@pytest.mark.parametrize(
    ("current", "target"),
    [
        (State.QUEUED, State.RUNNING),
        (State.QUEUED, State.SUCCEEDED),
        (State.QUEUED, State.RETRYING),
        (State.RETRYING, State.RUNNING),
        (State.RUNNING, State.DISPATCHED),
        (State.RUNNING, State.QUEUED),
    ],
)
def test_skipping_steps_is_illegal(current: State, target: State) -> None:
    with pytest.raises(IllegalTransition):
        check_transition(current, target)


def test_only_the_current_attempt_of_an_active_execution_is_accepted() -> None:
    assert accepts_update(State.RUNNING, 2, 2)
    assert accepts_update(State.DISPATCHED, 1, 1)
    assert not accepts_update(State.RUNNING, 2, 1), "a stale attempt"
    assert not accepts_update(State.RUNNING, 2, 3), "an attempt from the future"
    for state in (State.QUEUED, State.RETRYING, *TERMINAL):
        assert not accepts_update(state, 2, 2), state


def test_backoff_doubles_up_to_its_cap() -> None:
    backoff = Backoff(base_s=2.0, cap_s=30.0)
    assert [backoff.nominal(n) for n in range(1, 7)] == [2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    assert backoff.nominal(10_000) == 30.0


def test_backoff_jitter_stays_in_the_upper_half_of_the_nominal_delay() -> None:
    low = Backoff(base_s=2.0, cap_s=60.0, rand=lambda: 0.0)
    high = Backoff(base_s=2.0, cap_s=60.0, rand=lambda: 0.999999)
    assert low.delay(3) == pytest.approx(4.0)
    assert high.delay(3) == pytest.approx(8.0, rel=1e-5)


def test_infrastructure_failures_retry_until_max_attempts() -> None:
    backoff = Backoff(base_s=1.0, cap_s=10.0, rand=lambda: 1.0)
    assert after_infrastructure_failure(1, 3, backoff) == Retry(1.0)
    assert after_infrastructure_failure(2, 3, backoff) == Retry(2.0)
    assert after_infrastructure_failure(3, 3, backoff) == GiveUp()
    assert after_infrastructure_failure(1, 1, backoff) == GiveUp()
