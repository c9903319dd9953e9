"""Circuit breakers: pure state machines over a sliding window of call outcomes.

A breaker guards one provider or one executor. A *call* is one attempt handed to it, judged
at the first decisive moment: the executor starts the attempt (a success, or a slow call when
starting took longer than ``slow_call_s``), or the attempt fails before it starts. An executor
that later breaks an attempt it had started turns that call into a failure. Only
infrastructure failures count as failures: a workflow error means the provider did its job.

States, as in Resilience4j:

- CLOSED: calls flow; each outcome joins a time-based sliding window. Once the window holds
  ``minimum_calls`` and the failure rate or the slow-call rate reaches its threshold, OPEN.
- OPEN: no calls for ``open_wait_s``; then the next call asked for turns it HALF_OPEN.
- HALF_OPEN: at most ``half_open_probes`` calls go through. Enough failed or slow probes to
  reach a threshold open it again at once; when every probe succeeded, CLOSED with an empty
  window. Probes that never report back within ``half_open_max_s`` open it again.

Outcomes of calls admitted under an earlier state (an epoch ago) are counted in the totals
but never decide the current state: a slow attempt from before the breaker opened must not
close it, nor count as a probe.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

from comfyfleet.common.config import ConfigError, Settings, setting

Clock = Callable[[], float]


class BreakerState(StrEnum):
    CLOSED = "CLOSED"
    OPEN = "OPEN"
    HALF_OPEN = "HALF_OPEN"


@dataclass(frozen=True)
class BreakerPolicy(Settings):
    """When a breaker trips and how it recovers (read from ``COMFYFLEET_<prefix>WINDOW`` and
    so on: the scheduler's config names the prefix)."""

    # The sliding window: outcomes of the last window_s seconds.
    window_s: float = setting("WINDOW", 60.0)
    # Calls the window must hold before its rates may trip the breaker.
    minimum_calls: int = setting("MINIMUM_CALLS", 5)
    # The share of failed calls (0..1] that opens the breaker.
    failure_rate: float = setting("FAILURE_RATE", 0.5)
    # A call that took longer than this to start is slow.
    slow_call_s: float = setting("SLOW_CALL", 120.0)
    # The share of slow calls (0..1] that opens the breaker.
    slow_call_rate: float = setting("SLOW_CALL_RATE", 0.8)
    # How long an open breaker refuses calls before it lets probes through.
    open_wait_s: float = setting("OPEN_WAIT", 30.0)
    # Probe calls a half-open breaker lets through.
    half_open_probes: int = setting("HALF_OPEN_PROBES", 2)
    # A half-open breaker whose probes have not all reported back by then opens again.
    half_open_max_s: float = setting("HALF_OPEN_MAX", 600.0)

    def __post_init__(self) -> None:
        if self.minimum_calls < 1 or self.half_open_probes < 1:
            raise ConfigError("breaker minimum_calls and half_open_probes must be at least 1")
        if not (0 < self.failure_rate <= 1 and 0 < self.slow_call_rate <= 1):
            raise ConfigError("breaker failure and slow-call rates must be in (0, 1]")
        if min(self.window_s, self.slow_call_s, self.open_wait_s, self.half_open_max_s) <= 0:
            raise ConfigError("breaker durations must be positive")

    def tripped(self, calls: int, failures: int, slow: int) -> str | None:
        """Why ``calls`` outcomes with ``failures`` and ``slow`` among them trip the breaker."""
        if calls == 0:
            return None
        if failures / calls >= self.failure_rate:
            return f"{failures} of {calls} calls failed"
        if slow / calls >= self.slow_call_rate:
            return f"{slow} of {calls} calls were slower than {self.slow_call_s:g}s to start"
        return None


@dataclass(frozen=True)
class Transition:
    """A breaker changed state."""

    breaker: str
    source: BreakerState
    target: BreakerState
    reason: str
    # Wall-clock time of the change, seconds since the epoch.
    at: float


@dataclass(frozen=True)
class Snapshot:
    """A breaker as it stands: for the API and metrics."""

    name: str
    state: BreakerState
    calls: int
    failures: int
    slow: int
    failure_rate: float
    slow_call_rate: float
    # Wall-clock time of the last state change, seconds since the epoch.
    since: float
    transitions: int
    # Calls refused while open or out of probes.
    rejected: int
    # Admitted calls whose outcome is not known yet, and how many of them are probes.
    in_flight: int
    probes_in_flight: int


@dataclass
class _Call:
    at: float
    failed: bool
    slow: bool
    in_window: bool = False


class _Window:
    """The closed breaker's sliding window, with its failures and slow calls counted as calls
    come and go: judging it is O(1), not a walk over a minute of calls."""

    def __init__(self) -> None:
        self.calls: deque[_Call] = deque()
        self.failures = 0
        self.slow = 0

    def __len__(self) -> int:
        return len(self.calls)

    def append(self, call: _Call) -> None:
        call.in_window = True
        self.calls.append(call)
        self.failures += call.failed
        self.slow += call.slow

    def expire(self, before: float) -> None:
        """Drops the calls made at or before ``before``."""
        while self.calls and self.calls[0].at <= before:
            call = self.calls.popleft()
            call.in_window = False
            self.failures -= call.failed
            self.slow -= call.slow

    def turn_failed(self, call: _Call) -> None:
        if not call.failed:
            call.failed = True
            self.failures += call.in_window

    def clear(self) -> None:
        for call in self.calls:
            call.in_window = False
        self.calls.clear()
        self.failures = self.slow = 0


@dataclass
class Permit:
    """Leave to make one call, settled with ``success``, ``failure`` or ``release``; a
    success may later be turned into a failure with ``failure``."""

    breaker: CircuitBreaker
    epoch: int
    probe: bool
    settled: bool = False
    call: _Call | None = None

    def success(self, duration_s: float) -> None:
        self.breaker.settle(self, failed=False, duration_s=duration_s)

    def failure(self, duration_s: float) -> None:
        self.breaker.settle(self, failed=True, duration_s=duration_s)

    def release(self) -> None:
        """The call did not happen, or its outcome says nothing about the breaker's target."""
        self.breaker.release(self)


@dataclass
class CircuitBreaker:
    """One breaker. Not thread-safe: the scheduler calls it from its event loop only (other
    threads read ``Breakers.published()``)."""

    name: str
    policy: BreakerPolicy
    clock: Clock = time.monotonic
    wall: Clock = time.time
    on_transition: Callable[[Transition], None] = lambda _t: None
    state: BreakerState = BreakerState.CLOSED
    epoch: int = 0
    transitions: int = 0
    rejected: int = 0
    _since: float = field(init=False)
    _since_wall: float = field(init=False)
    _window: _Window = field(default_factory=_Window)
    _probes_out: int = 0
    # Permits given and not yet settled, probes or not.
    _unsettled: int = 0
    _probe_results: list[_Call] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._since = self.clock()
        self._since_wall = self.wall()

    # ---- asking for leave -----------------------------------------------------------------

    def available(self) -> bool:
        """Whether ``try_acquire`` would give a permit now (it may still change state)."""
        self._refresh()
        if self.state is BreakerState.CLOSED:
            return True
        if self.state is BreakerState.OPEN:
            return self.clock() - self._since >= self.policy.open_wait_s
        return self._probes_out + len(self._probe_results) < self.policy.half_open_probes

    def try_acquire(self) -> Permit | None:
        """A permit for one call, or None while the breaker refuses calls."""
        self._refresh()
        if self.state is BreakerState.OPEN:
            if self.clock() - self._since < self.policy.open_wait_s:
                self.rejected += 1
                return None
            self._move(BreakerState.HALF_OPEN, f"{self.policy.open_wait_s:g}s open: probing")
        if self.state is BreakerState.HALF_OPEN:
            if self._probes_out + len(self._probe_results) >= self.policy.half_open_probes:
                self.rejected += 1
                return None
            self._probes_out += 1
            self._unsettled += 1
            return Permit(self, self.epoch, probe=True)
        self._unsettled += 1
        return Permit(self, self.epoch, probe=False)

    def retry_in_s(self) -> float | None:
        """Seconds until an open breaker lets a probe through; None when it is not open."""
        self._refresh()
        if self.state is not BreakerState.OPEN:
            return None
        return max(0.0, self.policy.open_wait_s - (self.clock() - self._since))

    # ---- outcomes -------------------------------------------------------------------------

    def settle(self, permit: Permit, *, failed: bool, duration_s: float) -> None:
        """Records a call's outcome, once; a failure after a success turns the call bad (the
        attempt started, then its executor broke it)."""
        self._refresh()
        if permit.settled:
            if failed and permit.call is not None and not permit.call.failed:
                self._turned_bad(permit, permit.call)
            return
        permit.settled = True
        self._unsettled -= 1
        call = _Call(self.clock(), failed, duration_s > self.policy.slow_call_s)
        permit.call = call
        if permit.epoch != self.epoch:
            return  # admitted under an earlier state: it decides nothing now
        if permit.probe:
            self._probes_out -= 1
            self._probe_results.append(call)
            self._judge_probes()
        elif self.state is BreakerState.CLOSED:
            self._window.append(call)
            self._check_window()

    def _turned_bad(self, permit: Permit, call: _Call) -> None:
        self._window.turn_failed(call)
        if permit.epoch == self.epoch:
            if self.state is BreakerState.HALF_OPEN:
                self._judge_probes()
            else:
                self._check_window()  # a call that left the window changes nothing
        elif self.state is BreakerState.CLOSED:
            # The state moved on since the call was judged: count its failure as news.
            self._window.append(_Call(self.clock(), True, False))
            self._check_window()

    def release(self, permit: Permit) -> None:
        if permit.settled:
            return
        permit.settled = True
        self._unsettled -= 1
        if permit.probe and permit.epoch == self.epoch:
            self._probes_out -= 1

    # ---- reading --------------------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        self._refresh()
        if self.state is BreakerState.CLOSED:
            calls, failures, slow = len(self._window), self._window.failures, self._window.slow
        else:
            calls = len(self._probe_results)
            failures = sum(c.failed for c in self._probe_results)
            slow = sum(c.slow for c in self._probe_results)
        return Snapshot(
            name=self.name,
            state=self.state,
            calls=calls,
            failures=failures,
            slow=slow,
            failure_rate=failures / calls if calls else 0.0,
            slow_call_rate=slow / calls if calls else 0.0,
            since=self._since_wall,
            transitions=self.transitions,
            rejected=self.rejected,
            in_flight=self._unsettled,
            probes_in_flight=self._probes_out,
        )

    @property
    def idle(self) -> bool:
        """Closed for a whole window, with nothing in it and no call under way: forgetting
        it loses nothing worth showing."""
        self._refresh()
        return (
            self.state is BreakerState.CLOSED
            and not self._window
            and not self._unsettled
            and self.clock() - self._since >= self.policy.window_s
        )

    # ---- the state machine ----------------------------------------------------------------

    def _refresh(self) -> None:
        now = self.clock()
        self._window.expire(now - self.policy.window_s)
        if (
            self.state is BreakerState.HALF_OPEN
            and now - self._since >= self.policy.half_open_max_s
        ):
            self._move(
                BreakerState.OPEN,
                f"probes did not report back within {self.policy.half_open_max_s:g}s",
            )

    def _check_window(self) -> None:
        calls = len(self._window)
        if calls < self.policy.minimum_calls:
            return
        reason = self.policy.tripped(calls, self._window.failures, self._window.slow)
        if reason is not None:
            self._move(BreakerState.OPEN, f"{reason} in the last {self.policy.window_s:g}s")

    def _judge_probes(self) -> None:
        probes = self.policy.half_open_probes
        failures = sum(c.failed for c in self._probe_results)
        slow = sum(c.slow for c in self._probe_results)
        # Judged against every probe: once the bad ones alone reach a threshold, the rest
        # cannot save the breaker.
        reason = self.policy.tripped(probes, failures, slow)
        if reason is not None:
            self._move(BreakerState.OPEN, f"probes: {reason}")
        elif len(self._probe_results) >= probes:
            self._move(BreakerState.CLOSED, f"{probes} probes succeeded")

    def _move(self, target: BreakerState, reason: str) -> None:
        source = self.state
        self.state = target
        self.epoch += 1
        self.transitions += 1
        self._since = self.clock()
        self._since_wall = self.wall()
        self._window.clear()
        self._probes_out = 0
        self._probe_results = []
        self.on_transition(Transition(self.name, source, target, reason, self._since_wall))


class Scope(StrEnum):
    PROVIDER = "provider"
    EXECUTOR = "executor"


def breaker_name(scope: Scope, key: str) -> str:
    return f"{scope.value}/{key}"


@dataclass
class AttemptPermit:
    """Leave from both the provider's and the executor's breaker for one attempt."""

    permits: tuple[Permit, ...]

    def success(self, duration_s: float) -> None:
        for permit in self.permits:
            permit.success(duration_s)

    def failure(self, duration_s: float) -> None:
        for permit in self.permits:
            permit.failure(duration_s)

    def release(self) -> None:
        for permit in self.permits:
            permit.release()

    @property
    def settled(self) -> bool:
        return all(p.settled for p in self.permits)


@dataclass
class Breakers:
    """One replica's breakers: one per provider and one per executor, made on first use.

    Each replica judges from the attempts it ran itself; replicas need not agree, since any
    of them that keeps failing on a target stops sending it work on its own.
    """

    provider_policy: BreakerPolicy
    executor_policy: BreakerPolicy
    clock: Clock = time.monotonic
    wall: Clock = time.time
    on_transition: Callable[[Transition], None] = lambda _t: None
    _all: dict[str, CircuitBreaker] = field(default_factory=dict)
    _published: tuple[Snapshot, ...] = ()

    def get(self, scope: Scope, key: str) -> CircuitBreaker:
        name = breaker_name(scope, key)
        found = self._all.get(name)
        if found is None:
            policy = self.provider_policy if scope is Scope.PROVIDER else self.executor_policy
            found = CircuitBreaker(name, policy, self.clock, self.wall, self.on_transition)
            self._all[name] = found
        return found

    def state_of(self, scope: Scope, key: str) -> BreakerState:
        """A breaker's state without making one: a target never tried is closed."""
        found = self._all.get(breaker_name(scope, key))
        return found.snapshot().state if found is not None else BreakerState.CLOSED

    def _pair(self, provider: str, executor_id: str) -> tuple[CircuitBreaker, CircuitBreaker]:
        return self.get(Scope.PROVIDER, provider), self.get(Scope.EXECUTOR, executor_id)

    def available(self, provider: str, executor_id: str) -> bool:
        return all(b.available() for b in self._pair(provider, executor_id))

    def acquire(self, provider: str, executor_id: str) -> AttemptPermit | None:
        """Permits from both breakers, or None (and nothing held) when either refuses."""
        taken: list[Permit] = []
        for breaker in self._pair(provider, executor_id):
            permit = breaker.try_acquire()
            if permit is None:
                for held in taken:
                    held.release()
                self.publish()
                return None
            taken.append(permit)
        self.publish()
        return AttemptPermit(tuple(taken))

    def next_probe_in_s(self) -> float | None:
        """Seconds until the first open breaker lets a probe through."""
        waits = [w for b in self._all.values() if (w := b.retry_in_s()) is not None]
        return min(waits, default=None)

    def snapshots(self) -> list[Snapshot]:
        """Every breaker as it stands now (an open breaker past its wait may move), and
        published as :meth:`published`."""
        found = [self._all[name].snapshot() for name in sorted(self._all)]
        self._published = tuple(found)
        return found

    def publish(self) -> None:
        """Takes the snapshot that :meth:`published` hands out."""
        self.snapshots()

    def published(self) -> tuple[Snapshot, ...]:
        """The breakers as the event loop last published them: for readers on other threads
        (the metrics exporter), which must neither move a breaker nor walk the live ones.
        Acquiring, listing and pruning publish, and the dispatcher prunes every round."""
        return self._published

    def prune(self) -> None:
        """Forgets executor breakers with nothing to remember: executors come and go."""
        prefix = f"{Scope.EXECUTOR.value}/"
        for name in [n for n, b in self._all.items() if n.startswith(prefix) and b.idle]:
            del self._all[name]
        self.publish()
