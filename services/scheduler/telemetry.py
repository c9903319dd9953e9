"""Where circuit breaker changes become visible: the log, OpenTelemetry metrics, and a
``CircuitBreakerEvent`` on NATS for whoever listens (dashboards, operators' tools)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime

from opentelemetry import metrics

from comfyfleet.common.timeutil import to_timestamp
from comfyfleet.scheduler.v1 import scheduler_pb2
from services.scheduler.breaker import Breakers, BreakerState, Transition

log = logging.getLogger(__name__)

BREAKER_STATES = {
    BreakerState.CLOSED: scheduler_pb2.CIRCUIT_BREAKER_STATE_CLOSED,
    BreakerState.OPEN: scheduler_pb2.CIRCUIT_BREAKER_STATE_OPEN,
    BreakerState.HALF_OPEN: scheduler_pb2.CIRCUIT_BREAKER_STATE_HALF_OPEN,
}
# The breaker state as a gauge value.
STATE_LEVEL = {BreakerState.CLOSED: 0, BreakerState.HALF_OPEN: 1, BreakerState.OPEN: 2}

Publish = Callable[[str, bytes], Awaitable[None]]


def split_name(name: str) -> tuple[str, str]:
    """("provider", "runpod") from "provider/runpod"."""
    scope, _, target = name.partition("/")
    return scope, target


def event_of(t: Transition, replica: str) -> scheduler_pb2.CircuitBreakerEvent:
    scope, target = split_name(t.breaker)
    return scheduler_pb2.CircuitBreakerEvent(
        breaker=t.breaker,
        scope=scope,
        target=target,
        from_state=BREAKER_STATES[t.source],
        to_state=BREAKER_STATES[t.target],
        reason=t.reason,
        timestamp=to_timestamp(datetime.fromtimestamp(t.at, UTC)),
        replica=replica,
    )


class BreakerTelemetry:
    """Receives every transition of a replica's breakers (synchronously, from the event loop)
    and reports it; NATS publishes run in the background and never hold up a dispatch."""

    def __init__(
        self,
        replica: str,
        meter: metrics.Meter | None = None,
        publish: Publish | None = None,
        subject: str = "comfyfleet.scheduler.breakers",
    ) -> None:
        self.replica = replica
        self.meter = meter or metrics.get_meter("comfyfleet.scheduler")
        self.publish = publish
        self.subject = subject
        self._transitions = self.meter.create_counter(
            "circuit_breaker_transitions_total",
            description="Circuit breaker state changes",
        )
        self._sending: set[asyncio.Task[None]] = set()

    def on_transition(self, t: Transition) -> None:
        scope, target = split_name(t.breaker)
        level = logging.INFO if t.target is BreakerState.CLOSED else logging.WARNING
        log.log(level, "circuit breaker %s: %s -> %s (%s)", t.breaker, t.source, t.target, t.reason)
        self._transitions.add(
            1, {"scope": scope, "target": target, "from": t.source.value, "to": t.target.value}
        )
        if self.publish is not None:
            data = event_of(t, self.replica).SerializeToString()
            task = asyncio.get_running_loop().create_task(self._send(data))
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)

    async def _send(self, data: bytes) -> None:
        assert self.publish is not None
        try:
            await self.publish(self.subject, data)
        except Exception as err:  # the log and the metrics have it; NATS may be down
            log.warning("publishing a breaker event failed: %s", err)

    def observe(self, breakers: Breakers) -> None:
        """Gauges of the breakers as the event loop last published them: collection runs on
        the exporter's thread, where reading a live breaker could move its state."""

        def states(_options: metrics.CallbackOptions) -> Iterable[metrics.Observation]:
            for snap in breakers.published():
                scope, target = split_name(snap.name)
                yield metrics.Observation(
                    STATE_LEVEL[snap.state], {"scope": scope, "target": target}
                )

        def rejected(_options: metrics.CallbackOptions) -> Iterable[metrics.Observation]:
            for snap in breakers.published():
                scope, target = split_name(snap.name)
                yield metrics.Observation(snap.rejected, {"scope": scope, "target": target})

        self.meter.create_observable_gauge(
            "circuit_breaker_state",
            [states],
            description="0 closed, 1 half-open, 2 open",
        )
        self.meter.create_observable_counter(
            "circuit_breaker_rejected_calls_total",
            [rejected],
            description="Attempts a circuit breaker refused",
        )

    async def aclose(self) -> None:
        """Waits for the publishes under way."""
        if self._sending:
            await asyncio.gather(*self._sending, return_exceptions=True)
