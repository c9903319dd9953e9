"""Pruning of the delivery log: finished deliveries and their attempts past the retention
period, and rotated-out secrets that no longer sign.

A delivery is only pruned once it can no longer matter: it is finished (succeeded or failed
for good) and older than the retention, which operators keep longer than the event stream's
own age limit, so no event can come back from JetStream and be delivered a second time because
its (event, subscription) row is gone. Pending deliveries are never pruned, however old.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg

log = logging.getLogger(__name__)

# Rows removed per statement, so a large backlog never holds locks for long.
BATCH = 1000


@dataclass(frozen=True)
class Pruned:
    deliveries: int
    secrets: int


class Retention:
    def __init__(self, pool: asyncpg.Pool, retention_s: float, interval_s: float) -> None:
        self._pool = pool
        self._retention_s = retention_s
        self._interval_s = interval_s

    async def prune(self, now: datetime | None = None) -> Pruned:
        """Removes what is past retention as of ``now``, in batches, and says how much."""
        now = now or datetime.now(UTC)
        cutoff = now - timedelta(seconds=self._retention_s)
        deliveries = 0
        while True:
            # Attempts go with their delivery (ON DELETE CASCADE).
            removed = await self._pool.fetchval(
                "WITH gone AS ("
                "  DELETE FROM deliveries WHERE id IN ("
                "    SELECT id FROM deliveries"
                "     WHERE state <> 'pending' AND update_time < $1"
                "     ORDER BY update_time LIMIT $2)"
                "  RETURNING 1)"
                " SELECT count(*) FROM gone",
                cutoff,
                BATCH,
            )
            deliveries += int(removed)
            if removed < BATCH:
                break
        secrets = await self._pool.fetchval(
            "WITH gone AS (DELETE FROM subscription_secrets"
            "  WHERE expire_time IS NOT NULL AND expire_time <= $1 RETURNING 1)"
            " SELECT count(*) FROM gone",
            now,
        )
        return Pruned(deliveries=deliveries, secrets=int(secrets))

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                pruned = await self.prune()
                if pruned.deliveries or pruned.secrets:
                    log.info(
                        "pruned %d finished deliveries and %d expired secrets",
                        pruned.deliveries,
                        pruned.secrets,
                    )
            except Exception as err:
                # The database is away: the next round tries again; nothing depends on it.
                log.warning("pruning the delivery log failed: %r", err)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self._interval_s)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Retention]:
        """Prunes every interval until exit; a retention of 0 keeps everything."""
        if self._retention_s <= 0:
            yield self
            return
        stop = asyncio.Event()
        task = asyncio.create_task(self.run(stop), name="webhook-retention")
        try:
            yield self
        finally:
            stop.set()
            await task
