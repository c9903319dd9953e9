"""Breaker changes as metrics and as CircuitBreakerEvents."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from comfyfleet.scheduler.v1 import scheduler_pb2
from services.scheduler.breaker import BreakerPolicy, Breakers, BreakerState, Scope, Transition
from services.scheduler.telemetry import BreakerTelemetry, event_of

POLICY = BreakerPolicy(minimum_calls=1, open_wait_s=60)


@dataclass
class Published:
    messages: list[tuple[str, bytes]] = field(default_factory=list)

    async def __call__(self, subject: str, data: bytes) -> None:
        self.messages.append((subject, data))


def points(reader: InMemoryMetricReader) -> dict[str, list[Any]]:
    data = reader.get_metrics_data()
    assert data is not None
    found: dict[str, list[Any]] = {}
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                found[metric.name] = list(metric.data.data_points)
    return found


async def test_a_transition_is_counted_gauged_and_published() -> None:
    reader = InMemoryMetricReader()
    meter = MeterProvider(metric_readers=[reader]).get_meter("test")
    published = Published()
    telemetry = BreakerTelemetry("replica-1", meter, published, "fleet.breakers")
    breakers = Breakers(POLICY, POLICY, on_transition=telemetry.on_transition)
    telemetry.observe(breakers)
    permit = breakers.acquire("runpod", "ep-1")
    assert permit is not None
    permit.failure(0.1)
    assert breakers.acquire("runpod", "ep-1") is None
    await telemetry.aclose()

    found = points(reader)
    moves = {
        (p.attributes["scope"], p.attributes["target"], p.attributes["to"]): p.value
        for p in found["circuit_breaker_transitions_total"]
    }
    assert moves == {("provider", "runpod", "OPEN"): 1, ("executor", "ep-1", "OPEN"): 1}
    states = {p.attributes["target"]: p.value for p in found["circuit_breaker_state"]}
    assert states == {"runpod": 2, "ep-1": 2}
    rejected = {
        p.attributes["target"]: p.value for p in found["circuit_breaker_rejected_calls_total"]
    }
    assert rejected == {"runpod": 1, "ep-1": 0}, (
        "the provider refused before the executor was asked"
    )

    assert [subject for subject, _ in published.messages] == ["fleet.breakers"] * 2
    events = [scheduler_pb2.CircuitBreakerEvent.FromString(d) for _, d in published.messages]
    assert {e.breaker for e in events} == {"provider/runpod", "executor/ep-1"}
    assert all(e.replica == "replica-1" for e in events)


def test_events_carry_the_states_as_the_api_names_them() -> None:
    t = Transition("executor/ex-9", BreakerState.HALF_OPEN, BreakerState.CLOSED, "2 probes", 1e9)
    event = event_of(t, "r")
    assert (event.scope, event.target, event.reason) == ("executor", "ex-9", "2 probes")
    assert event.from_state == scheduler_pb2.CIRCUIT_BREAKER_STATE_HALF_OPEN
    assert event.to_state == scheduler_pb2.CIRCUIT_BREAKER_STATE_CLOSED
    assert event.timestamp.seconds == 1_000_000_000


async def test_a_failing_publish_costs_nothing_but_a_log_line() -> None:
    async def broken(subject: str, data: bytes) -> None:
        raise ConnectionError("nats is down")

    telemetry = BreakerTelemetry("r", publish=broken)
    telemetry.on_transition(
        Transition("provider/ecs", BreakerState.CLOSED, BreakerState.OPEN, "x", 0.0)
    )
    await telemetry.aclose()


async def test_collecting_metrics_on_another_thread_never_moves_a_breaker() -> None:
    """A half-open breaker whose probes are overdue opens when the event loop next looks,
    never from the exporter's thread, which reads what the loop last published."""
    now = [0.0]
    policy = BreakerPolicy(minimum_calls=1, open_wait_s=1, half_open_max_s=5)
    reader = InMemoryMetricReader()
    telemetry = BreakerTelemetry("r", MeterProvider(metric_readers=[reader]).get_meter("t"))
    moves: list[Transition] = []

    def on_transition(t: Transition) -> None:
        moves.append(t)
        telemetry.on_transition(t)

    breakers = Breakers(policy, policy, clock=lambda: now[0], on_transition=on_transition)
    telemetry.observe(breakers)
    first = breakers.acquire("ecs", "ex-1")
    assert first is not None
    first.failure(0.1)
    now[0] = 2.0
    probe = breakers.acquire("ecs", "ex-1")
    assert probe is not None, "a probe goes through once the open wait is over"
    assert breakers.get(Scope.PROVIDER, "ecs").state is BreakerState.HALF_OPEN
    now[0] = 10.0  # the probe is overdue: the next look at the breaker opens it again
    seen = len(moves)

    def collect() -> dict[str, float]:
        found = points(reader)
        return {p.attributes["target"]: p.value for p in found["circuit_breaker_state"]}

    assert await asyncio.to_thread(collect) == {"ecs": 1, "ex-1": 1}
    assert len(moves) == seen, "the exporter's thread moved a breaker"
    assert breakers.get(Scope.PROVIDER, "ecs").state is BreakerState.HALF_OPEN

    breakers.prune()  # the dispatcher's round, on the event loop
    assert [t.target for t in moves[seen:]] == [BreakerState.OPEN] * 2
    assert await asyncio.to_thread(collect) == {"ecs": 2, "ex-1": 2}
