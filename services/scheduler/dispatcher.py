"""The dispatch loop: claim what free executors can take, run each attempt in its own task."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from typing import Any

from comfyfleet.common import metrics
from comfyfleet.common.telemetry import traced
from comfyfleet.common.timeutil import utcnow
from services.scheduler.attempt import AttemptRunner
from services.scheduler.breaker import Breakers
from services.scheduler.config import SchedulerSettings
from services.scheduler.journal import DISPATCH_KEY
from services.scheduler.notify import Notifier, wait_any
from services.scheduler.providers.base import ProviderError, Providers
from services.scheduler.queue import Queue
from services.scheduler.records import Dispatch, Placement

log = logging.getLogger(__name__)


class Dispatcher:
    def __init__(
        self,
        queue: Queue,
        runner: AttemptRunner,
        providers: Providers,
        notifier: Notifier,
        settings: SchedulerSettings,
        breakers: Breakers,
    ) -> None:
        self.queue = queue
        self.runner = runner
        self.providers = providers
        self.breakers = breakers
        self.notifier = notifier
        self.settings = settings
        self._attempts: dict[tuple[str, int], asyncio.Task[None]] = {}
        # Attempts this replica has dispatched since it started.
        self.dispatched = 0
        self._interrupts: set[asyncio.Task[None]] = set()

    @property
    def in_flight(self) -> int:
        return len(self._attempts)

    async def run(self, stop: asyncio.Event) -> None:
        """Claims until ``stop`` is set; attempts already started keep running."""
        with self.notifier.watch(DISPATCH_KEY) as changed:
            while not stop.is_set():
                changed.clear()
                if await self._claim_batch():
                    continue
                await wait_any([changed, stop], await self._idle_s())

    async def _claim_batch(self) -> bool:
        """Claims a batch; True when it dispatched anything (there may be more)."""
        s = self.settings
        try:
            dispatches = await self.queue.claim(
                tenant_cap=s.tenant_concurrency,
                executor_lapse_s=s.executor_lapse_s,
                lease_s=s.lease_s,
            )
        except Exception:
            log.exception("claiming from the queue failed")
            return False
        for dispatch in dispatches:
            self._start(dispatch)
        return bool(dispatches)

    def _start(self, dispatch: Dispatch) -> None:
        self.dispatched += 1
        log.info(
            "dispatched %s attempt %d to %s",
            dispatch.record.id,
            dispatch.attempt,
            dispatch.placement.executor_id,
        )
        key = (dispatch.record.id, dispatch.attempt)
        task = asyncio.create_task(_observed(self.runner, dispatch), name=f"attempt {key}")
        self._attempts[key] = task
        task.add_done_callback(lambda _t: self._attempts.pop(key, None))

    async def _idle_s(self) -> float:
        """Sleep until notified, the next retry backoff ends, an open breaker lets a probe
        through, or the poll interval passes."""
        self.breakers.prune()
        try:
            wake = await self.queue.next_wakeup_s()
        except Exception:
            wake = None
        waits = [self.settings.poll_interval_s, wake, self.breakers.next_probe_in_s()]
        return min(w for w in waits if w is not None)

    async def interrupt(self, placement: Placement, execution_id: str, attempt: int) -> None:
        """Best effort: stops following the attempt here and asks its executor to stop."""
        task = self._attempts.get((execution_id, attempt))
        if task is not None:
            task.cancel()
        try:
            await self.providers.of(placement).cancel(placement, execution_id, attempt)
        except ProviderError as err:
            log.info(
                "cancelling %s/%d on %s failed: %s",
                execution_id,
                attempt,
                placement.executor_id,
                err,
            )

    def interrupt_soon(self, placement: Placement, execution_id: str, attempt: int) -> None:
        """``interrupt`` in the background, for loops that must not wait on an executor."""
        task = asyncio.create_task(self.interrupt(placement, execution_id, attempt))
        self._interrupts.add(task)
        task.add_done_callback(self._interrupts.discard)

    async def drain(self, grace_s: float) -> None:
        """Lets in-flight attempts finish within ``grace_s``; the rest are abandoned here and
        their leases run out, so another replica (or this one after a restart) retries them."""
        tasks = [*self._attempts.values(), *self._interrupts]
        if tasks:
            _done, pending = await asyncio.wait(tasks, timeout=grace_s)
            for task in pending:
                task.cancel()
            for task in pending:
                with contextlib.suppress(asyncio.CancelledError):
                    await task


def _observed(runner: AttemptRunner, dispatch: Dispatch) -> Coroutine[Any, Any, None]:
    """The attempt's run as a span of its execution's trace (so the executor's spans join
    it); counts the time the execution waited in the queue."""
    record = dispatch.record
    metrics.dispatched((utcnow() - record.queued_since).total_seconds(), record.priority)
    attributes = {
        "comfyfleet.execution_id": record.id,
        "comfyfleet.attempt": dispatch.attempt,
        "comfyfleet.executor_id": dispatch.placement.executor_id,
    }
    return traced(
        record.traceparent, "scheduler attempt", runner.run(dispatch), attributes=attributes
    )
