"""The executor's single slot: who runs now, cancelling it, and handing it back on shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace

from comfyfleet.common.errors import Cancelled, ResourceExhausted, Unavailable
from services.executor.attempt import Attempt, AttemptDeps, AttemptSpec, validate_spec
from services.executor.resources import DeviceInfo, device_info
from services.executor.weights import WeightsStats

log = logging.getLogger(__name__)

# How soon a refused dispatch may try again: about the length of a short run.
BUSY_RETRY_S = 2.0


@dataclass(frozen=True)
class Capacity:
    gpu: DeviceInfo
    slots: int
    busy_slots: int
    cached_models: tuple[str, ...]


@dataclass(frozen=True)
class WorkerStatus:
    executor_id: str
    execution_id: str
    attempt: int
    capacity: Capacity
    cache_hits: int
    cache_misses: int
    # None when the engine loads its models outside this process (comfyui).
    weights: WeightsStats | None = None


class Worker:
    """Runs one attempt at a time; a second one is refused as RESOURCE_EXHAUSTED."""

    def __init__(self, deps: AttemptDeps, on_change: Callable[[], None] = lambda: None) -> None:
        self.deps = deps
        self.on_change = on_change
        self._current: Attempt | None = None
        self._draining = False

    def identify(self, executor_id: str) -> None:
        """Sets the id, known only once the server has bound its port."""
        self.deps = replace(self.deps, executor_id=executor_id)

    @property
    def current(self) -> Attempt | None:
        return self._current

    def start(self, spec: AttemptSpec) -> Attempt:
        """Takes the slot for ``spec`` and starts it; raises when the request or slot is bad."""
        validate_spec(spec)
        if self._draining:
            raise Unavailable("the executor is shutting down", reason="EXECUTOR_DRAINING")
        if self._current is not None:
            raise ResourceExhausted(
                f"the executor is busy with {self._current.spec.execution_id}",
                retry_after_s=BUSY_RETRY_S,
                reason="EXECUTOR_BUSY",
            )
        attempt = Attempt(spec, self.deps, on_free=lambda: self._release(attempt))
        self._current = attempt
        self.on_change()
        return attempt

    def stop_taking_work(self) -> None:
        """Refuses every later attempt (EXECUTOR_DRAINING): the executor is about to leave."""
        self._draining = True

    def _release(self, attempt: Attempt) -> None:
        # Called when the engine thread is done, not when the stream ended: a run that
        # ignored its cancel still holds the device.
        if self._current is attempt:
            self._current = None
            self.on_change()

    def cancel(self, execution_id: str, attempt: int) -> bool:
        """Interrupts the attempt when it runs here and has not reported its end."""
        current = self._current
        if current is None or current.spec.key != (execution_id, attempt):
            return False
        if current.reported.is_set():
            return False
        current.stop(Cancelled("the execution was cancelled", reason="EXECUTION_CANCELLED"))
        return True

    def capacity(self) -> Capacity:
        return Capacity(
            gpu=device_info(self.deps.engine.device),
            slots=1,
            busy_slots=0 if self._current is None else 1,
            cached_models=tuple(self.deps.models.cached()),
        )

    def status(self) -> WorkerStatus:
        current = self._current
        return WorkerStatus(
            executor_id=self.deps.executor_id,
            execution_id=current.spec.execution_id if current else "",
            attempt=current.spec.attempt if current else 0,
            capacity=self.capacity(),
            cache_hits=self.deps.models.hits,
            cache_misses=self.deps.models.misses,
            weights=self.deps.weights.stats() if self.deps.weights is not None else None,
        )

    async def drain(self, grace_s: float) -> None:
        """Refuses new work, lets the running attempt finish within ``grace_s``, then hands it
        back (a retryable failure) and waits for that to be reported."""
        self.stop_taking_work()
        current = self._current
        if current is None:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(current.reported.wait(), grace_s)
        if current.reported.is_set():
            return
        log.warning("handing back %s at shutdown", current.spec.key)
        current.stop(
            Unavailable("the executor shut down during the run", reason="EXECUTOR_SHUTDOWN")
        )
        await current.reported.wait()
