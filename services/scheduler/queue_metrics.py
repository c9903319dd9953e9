"""queue_depth, reported by one scheduler replica at a time.

Every replica sees the same queue. If each reported it, ``sum(queue_depth)`` (what the alerts
and the executors' autoscaler read) would count every waiting execution once per replica. So
the replica holding a session-level advisory lock reports, and the others report nothing;
when the holder goes away its connection closes, the lock is freed, and another replica
takes over at its next round.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import asyncpg

from comfyfleet.common import metrics
from services.scheduler.notify import wait_any
from services.scheduler.store import WAITING

log = logging.getLogger(__name__)

_DEPTHS = f"""
SELECT priority, tenant, environment, count(*) AS depth FROM executions
WHERE state IN {WAITING} GROUP BY priority, tenant, environment
"""

Key = tuple[int, str, str]


class QueueDepthReporter:
    def __init__(self, pool: asyncpg.Pool, schema: str, interval_s: float = 5.0) -> None:
        self.pool = pool
        self.lock_key = f"{schema}:queue_depth_reporter"
        self.interval_s = interval_s
        self.gauge = metrics.QueueGauge({})
        self._conn: asyncpg.pool.PoolConnectionProxy | None = None
        # Every (priority, tenant, environment) reported so far: a slice that drains reads 0,
        # not nothing.
        self._seen: set[Key] = set()

    async def run(self, stop: asyncio.Event) -> None:
        """Samples the queue every ``interval_s`` until ``stop`` is set."""
        with metrics.queue_depth_source(self.gauge):
            try:
                while not stop.is_set():
                    await self.sample()
                    await wait_any([stop], self.interval_s)
            finally:
                await self.release()

    async def sample(self) -> None:
        """One round: refreshes the gauge when this replica reports, empties it otherwise."""
        try:
            if await self._leading():
                self.gauge.depths = self._with_drained(await self._depths())
                return
        except Exception as err:
            # The database went away: another replica may take over meanwhile.
            log.warning("sampling the queue depth failed: %r", err)
            await self.release()
        self.gauge.depths = {}

    async def _leading(self) -> bool:
        """Whether this replica holds the reporter's lock, taking it when free. The
        connection holding it is kept for as long as this replica reports."""
        if self._conn is not None:
            return True
        conn = await self.pool.acquire()
        try:
            locked = await conn.fetchval("SELECT pg_try_advisory_lock(hashtext($1))", self.lock_key)
        except BaseException:
            await self.pool.release(conn)
            raise
        if locked:
            self._conn = conn
            return True
        await self.pool.release(conn)
        return False

    async def _depths(self) -> dict[Key, int]:
        assert self._conn is not None
        rows = await self._conn.fetch(_DEPTHS)
        return {(r["priority"], r["tenant"], r["environment"]): r["depth"] for r in rows}

    def _with_drained(self, depths: dict[Key, int]) -> dict[Key, int]:
        self._seen.update(depths)
        if not self._seen:
            # Nothing queued yet: one zero, so that the metric exists (alerts on its absence).
            return {(0, "", ""): 0}
        return {key: depths.get(key, 0) for key in self._seen}

    async def release(self) -> None:
        """Stops leading: frees the lock (and its connection) for another replica."""
        conn, self._conn = self._conn, None
        if conn is None:
            return
        # The pool's reset on release unlocks; a connection that broke is closed by the pool
        # (or was already given back when its session ended), and its lock went with it.
        with contextlib.suppress(Exception):
            await self.pool.release(conn)
