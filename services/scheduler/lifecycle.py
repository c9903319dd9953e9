"""The execution state machine, attempt fencing and retry backoff: pure decisions, no I/O."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum


class State(StrEnum):
    """An execution's state, stored by name in the ``executions.state`` column."""

    QUEUED = "QUEUED"
    DISPATCHED = "DISPATCHED"
    RUNNING = "RUNNING"
    RETRYING = "RETRYING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL

    @property
    def active(self) -> bool:
        """An attempt holds an executor slot and a lease."""
        return self in ACTIVE

    @property
    def waiting(self) -> bool:
        """The execution waits in the queue for a dispatch."""
        return self in WAITING


TERMINAL = frozenset({State.SUCCEEDED, State.FAILED, State.CANCELLED})
ACTIVE = frozenset({State.DISPATCHED, State.RUNNING})
WAITING = frozenset({State.QUEUED, State.RETRYING})

# Every transition the scheduler makes. RETRYING is the wait between an infrastructure failure
# and the next dispatch; once its backoff has passed it is claimed exactly like QUEUED.
TRANSITIONS: dict[State, frozenset[State]] = {
    State.QUEUED: frozenset({State.DISPATCHED, State.FAILED, State.CANCELLED}),
    State.RETRYING: frozenset({State.DISPATCHED, State.FAILED, State.CANCELLED}),
    State.DISPATCHED: frozenset(
        {State.RUNNING, State.SUCCEEDED, State.RETRYING, State.FAILED, State.CANCELLED}
    ),
    State.RUNNING: frozenset({State.SUCCEEDED, State.RETRYING, State.FAILED, State.CANCELLED}),
    State.SUCCEEDED: frozenset(),
    State.FAILED: frozenset(),
    State.CANCELLED: frozenset(),
}


class IllegalTransition(RuntimeError):
    """The scheduler tried a transition the state machine forbids: a bug, never user input."""


def check_transition(current: State, target: State) -> None:
    if target not in TRANSITIONS[current]:
        raise IllegalTransition(f"{current} -> {target}")


def accepts_update(state: State, current_attempt: int, update_attempt: int) -> bool:
    """Whether an executor's report about ``update_attempt`` may change the execution.

    The attempt number is the fencing token: only the current attempt of an execution that
    still holds an executor may move it; a stale attempt's reports, and anything after a
    terminal state, are ignored.
    """
    return state.active and current_attempt == update_attempt


@dataclass(frozen=True)
class Retry:
    """Try again after ``delay_s``."""

    delay_s: float


@dataclass(frozen=True)
class GiveUp:
    """Every allowed attempt is used."""


def after_infrastructure_failure(
    attempt: int, max_attempts: int, backoff: Backoff
) -> Retry | GiveUp:
    """What follows the infrastructure failure of attempt number ``attempt``."""
    if attempt >= max_attempts:
        return GiveUp()
    return Retry(backoff.delay(attempt))


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with jitter: ``base * 2^(n-1)`` capped at ``cap``, then a random
    point in its upper half, so replicas retrying together spread out but never retry sooner
    than half the nominal delay."""

    base_s: float
    cap_s: float
    rand: Callable[[], float] = random.random

    def nominal(self, failures: int) -> float:
        # Cap the exponent too: 2**1000 is a float overflow long before any cap applies.
        return min(self.cap_s, self.base_s * 2 ** min(max(failures - 1, 0), 62))

    def delay(self, failures: int) -> float:
        nominal = self.nominal(failures)
        return nominal / 2 + self.rand() * nominal / 2
