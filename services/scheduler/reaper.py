"""The reaper: makes sure every accepted execution ends, whatever process died where.

Every replica runs one; each change it makes is re-checked under the execution's row lock and
the attempt fence, so two reapers (or a reaper and a late executor update) never both act.
"""

from __future__ import annotations

import asyncio
import logging

from comfyfleet.common.errors import Unavailable
from services.scheduler.config import SchedulerSettings
from services.scheduler.dispatcher import Dispatcher
from services.scheduler.executors import ExecutorRegistry
from services.scheduler.notify import wait_any
from services.scheduler.store import ExecutionStore, Fenced

log = logging.getLogger(__name__)


class Reaper:
    def __init__(
        self,
        store: ExecutionStore,
        registry: ExecutorRegistry,
        dispatcher: Dispatcher,
        settings: SchedulerSettings,
    ) -> None:
        self.store = store
        self.registry = registry
        self.dispatcher = dispatcher
        self.settings = settings

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.sweep()
            except Exception:
                log.exception("reaper sweep failed")
            await wait_any([stop], self.settings.reaper_interval_s)

    async def sweep(self) -> None:
        await self.expire_leases()
        await self.drop_lapsed_executors()
        await self.fail_overdue_runs()
        await self.fail_expired_waits()
        await self.fail_past_deadline()

    async def expire_leases(self) -> None:
        """An attempt nobody renewed (its executor or its scheduler went silent) is an
        infrastructure failure: retried, or failed once its attempts are used."""
        for fence in await self.store.expired_leases():
            error = Unavailable(
                f"attempt {fence.attempt} lost its lease: neither its executor nor its"
                " scheduler kept it alive",
                reason="LEASE_EXPIRED",
            ).to_status()
            placement = await self.store.placement(fence)
            if await self.store.infrastructure_failure(
                fence, error, require="lease_expires_at < now()"
            ):
                log.warning("%s: lease expired", fence)
                if placement is not None:
                    self.dispatcher.interrupt_soon(placement, fence.execution_id, fence.attempt)

    async def drop_lapsed_executors(self) -> None:
        lapsed = await self.registry.drop_lapsed(self.settings.executor_lapse_s)
        if not lapsed:
            return
        log.warning("executors stopped heartbeating: %s", ", ".join(lapsed))
        for fence in await self.store.active_on(lapsed):
            await self._executor_vanished(fence)

    async def _executor_vanished(self, fence: Fenced) -> None:
        placement = await self.store.placement(fence)
        executor = placement.executor_id if placement else "unknown"
        error = Unavailable(
            f"executor {executor} stopped sending heartbeats", reason="EXECUTOR_LOST"
        ).to_status()
        await self.store.infrastructure_failure(fence, error)

    async def fail_overdue_runs(self) -> None:
        # The executor enforces the run timeout itself; a lease's worth of grace lets it report
        # first, so the scheduler only steps in for an executor that cannot.
        grace = self.settings.lease_s
        for fence in await self.store.overdue_runs(grace):
            placement = await self.store.fail_overdue_run(fence, grace)
            if placement is not None:
                self.dispatcher.interrupt_soon(placement, fence.execution_id, fence.attempt)

    async def fail_expired_waits(self) -> None:
        for execution_id in await self.store.expired_waits():
            await self.store.fail_expired_wait(execution_id)

    async def fail_past_deadline(self) -> None:
        """The overall deadline ends an execution wherever it is; a running attempt is told
        to stop."""
        for execution_id in await self.store.past_deadline():
            running = await self.store.fail_past_deadline(execution_id)
            if running is not None:
                fence, placement = running
                self.dispatcher.interrupt_soon(placement, fence.execution_id, fence.attempt)
