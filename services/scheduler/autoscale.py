"""Autoscaling as pure functions: (queue depth, wait times, utilisation, now) -> desired
replicas per provider. No I/O; ``scaling.py`` applies the decisions to the providers' APIs.

The source design's policy is the default: target queue depth 5 per replica (up at 10, down
at 2), target wait 30 s (up at 60 s, down at 15 s), +2 replicas at most every 60 s, -1 at
most every 300 s, a warm pool of 3 while there is work, and zero after 600 s without any.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

from comfyfleet.common.config import ConfigError, Settings, setting


@dataclass(frozen=True)
class ScalePolicy(Settings):
    """How a provider is scaled (read from ``COMFYFLEET_SCHEDULER_AUTOSCALE_*``; each provider
    sets its own bounds and warm pool)."""

    # Queue depth per replica: the aim, and the levels that trigger a change.
    target_queue_depth: float = setting("TARGET_QUEUE_DEPTH", 5.0)
    scale_up_queue_depth: float = setting("UP_QUEUE_DEPTH", 10.0)
    scale_down_queue_depth: float = setting("DOWN_QUEUE_DEPTH", 2.0)
    # The oldest wait: the aim, and the levels that trigger a change.
    target_wait_s: float = setting("TARGET_WAIT", 30.0)
    scale_up_wait_s: float = setting("UP_WAIT", 60.0)
    scale_down_wait_s: float = setting("DOWN_WAIT", 15.0)
    # At most +scale_up_step per scale_up_window_s, -scale_down_step per scale_down_window_s.
    scale_up_window_s: float = setting("UP_WINDOW", 60.0)
    scale_up_step: int = setting("UP_STEP", 2)
    scale_down_window_s: float = setting("DOWN_WINDOW", 300.0)
    scale_down_step: int = setting("DOWN_STEP", 1)
    # Replicas kept while there was work in the last max_idle_s.
    warm_pool: int = 3
    max_idle_s: float = setting("MAX_IDLE", 600.0)
    # After max_idle_s without work: down to min_replicas (zero by default) at once.
    scale_to_zero: bool = setting("SCALE_TO_ZERO", True)
    min_replicas: int = 0
    max_replicas: int = 10

    def __post_init__(self) -> None:
        if not 0 <= self.min_replicas <= self.max_replicas:
            raise ConfigError("autoscaling needs 0 <= min_replicas <= max_replicas")
        if self.scale_up_step < 1 or self.scale_down_step < 1 or self.warm_pool < 0:
            raise ConfigError("autoscaling steps must be at least 1 and the warm pool >= 0")
        if not (
            0 <= self.scale_down_queue_depth <= self.target_queue_depth
            and self.target_queue_depth <= self.scale_up_queue_depth
            and self.target_queue_depth > 0
        ):
            raise ConfigError("autoscaling queue depths must be down <= target <= up, target > 0")
        if not 0 <= self.scale_down_wait_s <= self.target_wait_s <= self.scale_up_wait_s:
            raise ConfigError("autoscaling waits must be down <= target <= up")
        if self.target_wait_s <= 0:
            raise ConfigError("the autoscaling target wait must be positive")


@dataclass(frozen=True)
class Signals:
    """What one provider faces now."""

    # Executions waiting that this provider is to serve, and the oldest one's wait.
    queue_depth: int
    oldest_wait_s: float
    # Replicas the provider has (asked for), and how many of them run work.
    replicas: int
    busy: int

    @property
    def utilization(self) -> float:
        return min(1.0, self.busy / self.replicas) if self.replicas else 0.0


@dataclass(frozen=True)
class ScaleState:
    """What the autoscaler remembers about a provider between decisions (seconds since the
    epoch; None: never)."""

    last_up_at: float | None = None
    last_down_at: float | None = None
    last_active_at: float | None = None


@dataclass(frozen=True)
class Decision:
    desired: int
    reason: str
    state: ScaleState


def _since(at: float | None, now: float) -> float:
    return math.inf if at is None else now - at


def floor_of(policy: ScalePolicy, signals: Signals, idle_s: float) -> int:
    """The fewest replicas to keep: those at work, the warm pool while there was work
    lately, the minimum always."""
    keep = max(policy.min_replicas, signals.busy)
    if idle_s < policy.max_idle_s or not policy.scale_to_zero:
        keep = max(keep, policy.warm_pool)
    return min(keep, policy.max_replicas)


def decide(policy: ScalePolicy, signals: Signals, state: ScaleState, now: float) -> Decision:
    """The replicas one provider should have now, and why."""
    active = signals.queue_depth > 0 or signals.busy > 0
    state = replace(state, last_active_at=now if active else state.last_active_at)
    idle_s = _since(state.last_active_at, now)
    floor = floor_of(policy, signals, idle_s)
    current = signals.replicas
    up = _scale_up(policy, signals, state, now, floor)
    if up is not None:
        return up
    if current < floor:
        return Decision(floor, f"keeping {floor} warm while there is work", state)
    if current > floor and idle_s >= policy.max_idle_s and policy.scale_to_zero:
        why = f"no work for {policy.max_idle_s:g}s: down to {floor}"
        return Decision(floor, why, replace(state, last_down_at=now))
    down = _scale_down(policy, signals, state, now, floor)
    return down or Decision(current, "steady", state)


def _scale_up(
    policy: ScalePolicy, signals: Signals, state: ScaleState, now: float, floor: int
) -> Decision | None:
    current, depth = signals.replicas, signals.queue_depth
    per_replica = depth / max(current, 1)
    if current == 0 and depth > 0:
        why = f"{depth} waiting and no replica"
    elif per_replica >= policy.scale_up_queue_depth:
        why = f"queue depth {per_replica:g} per replica at or above {policy.scale_up_queue_depth:g}"
    elif signals.oldest_wait_s >= policy.scale_up_wait_s:
        why = f"oldest wait {signals.oldest_wait_s:.0f}s at or above {policy.scale_up_wait_s:g}s"
    else:
        return None
    if current > 0 and _since(state.last_up_at, now) < policy.scale_up_window_s:
        return None  # the last step has not had its window to work yet
    # What would bring the queue and the wait back to their targets, one more at least.
    by_wait = math.ceil(current * signals.oldest_wait_s / policy.target_wait_s)
    wanted = max(math.ceil(depth / policy.target_queue_depth), by_wait, current + 1)
    desired = min(wanted, current + policy.scale_up_step, policy.max_replicas)
    desired = max(desired, floor)
    if desired <= current:
        return None
    return Decision(desired, f"{why}: +{desired - current}", replace(state, last_up_at=now))


def _scale_down(
    policy: ScalePolicy, signals: Signals, state: ScaleState, now: float, floor: int
) -> Decision | None:
    current = signals.replicas
    quiet = (
        signals.queue_depth / max(current, 1) <= policy.scale_down_queue_depth
        and signals.oldest_wait_s <= policy.scale_down_wait_s
    )
    settled = (
        _since(state.last_down_at, now) >= policy.scale_down_window_s
        and _since(state.last_up_at, now) >= policy.scale_down_window_s
    )
    if not (quiet and settled and current > floor):
        return None
    desired = max(current - policy.scale_down_step, floor)
    why = f"queue depth {signals.queue_depth} and wait {signals.oldest_wait_s:.0f}s are low"
    return Decision(desired, f"{why}: -{current - desired}", replace(state, last_down_at=now))


@dataclass(frozen=True)
class ProviderView:
    """A provider as the planner sees it: cheaper first, healthy or not."""

    name: str
    price: float
    healthy: bool
    replicas: int
    busy: int
    policy: ScalePolicy
    state: ScaleState


def plan(
    providers: Sequence[ProviderView], queue_depth: int, oldest_wait_s: float, now: float
) -> dict[str, Decision]:
    """Decisions for every provider. The queue goes to the cheapest healthy provider, as
    routing sends it; what its largest size cannot take spills to the next one. A provider
    whose breaker is open gets no demand: it keeps its floor until it recovers."""
    left, out = queue_depth, {}
    for p in sorted(providers, key=lambda v: (not v.healthy, v.price, v.name)):
        share = left if p.healthy else 0
        signals = Signals(share, oldest_wait_s if share else 0.0, p.replicas, p.busy)
        decision = decide(p.policy, signals, p.state, now)
        out[p.name] = decision
        capacity = math.floor(p.policy.max_replicas * p.policy.target_queue_depth)
        left = max(0, left - capacity) if p.healthy else left
    return out
