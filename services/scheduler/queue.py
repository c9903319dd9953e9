"""The durable queue: claiming the next execution for a free executor, and queue statistics."""

from __future__ import annotations

from dataclasses import dataclass, replace

import asyncpg

from services.scheduler.breaker import AttemptPermit
from services.scheduler.journal import Journal
from services.scheduler.lifecycle import State, check_transition
from services.scheduler.records import Dispatch, ExecutionRecord, InputRecord, Placement
from services.scheduler.routing import FreeExecutor, Job, Router
from services.scheduler.store import ACTIVE, WAITING
from services.scheduler.views import EventType, build_event

# Candidates are locked a few at a time: replicas skip each other's, and a candidate whose
# tenant or node types cannot be served now does not block the ones behind it.
_CANDIDATES = f"""
SELECT e.* FROM executions e
WHERE e.state IN {WAITING} AND e.not_before <= now()
  AND (SELECT count(*) FROM executions a
       WHERE a.tenant = e.tenant AND a.state IN {ACTIVE}) < coalesce(e.tenant_cap, $1)
ORDER BY e.priority DESC, e.created_at, e.id
LIMIT $2
FOR UPDATE SKIP LOCKED
"""

# Live executors with a free slot. Read before the queue: a claim then never sees an executor
# that registered after work it does not see yet, so priority order holds.
_FREE_EXECUTORS = f"""
SELECT x.id, x.address, x.provider, x.transport, x.node_types, x.slots, x.gpu_name,
       x.gpu_free_memory_bytes, x.cached_models, b.busy
FROM executors x
CROSS JOIN LATERAL (SELECT count(*) AS busy FROM attempts a
                    WHERE a.executor_id = x.id AND a.state IN {ACTIVE}) b
WHERE x.last_seen > now() - make_interval(secs => $1) AND x.slots > b.busy
"""


@dataclass(frozen=True)
class QueueSlice:
    priority: int
    tenant: str
    # The provider of the last attempt, for executions waiting for a retry; "" before any.
    provider: str
    depth: int
    oldest_wait_s: float


@dataclass(frozen=True)
class ProviderLoad:
    provider: str
    executors: int
    slots: int
    busy_slots: int


@dataclass(frozen=True)
class QueueStats:
    depth: int
    oldest_wait_s: float
    running: int
    slices: list[QueueSlice]
    providers: list[ProviderLoad]


class Queue:
    """Claims executions for executors, several replicas at once without double dispatch."""

    def __init__(self, pool: asyncpg.Pool, journal: Journal, schema: str, router: Router) -> None:
        self.pool = pool
        self.journal = journal
        self.schema = schema
        self.router = router

    async def claim(
        self, *, tenant_cap: int, executor_lapse_s: float, lease_s: float, batch: int = 8
    ) -> Dispatch | None:
        """Dispatches the first waiting execution that a free executor can take, if any.

        The dispatch holds the breakers' permit; if the transaction fails after the permit
        was taken, the permit is given back.
        """
        permit: AttemptPermit | None = None
        try:
            async with self.pool.acquire() as conn, conn.transaction():
                found = await self._claim(conn, tenant_cap, executor_lapse_s, batch)
                if found is None:
                    return None
                record, placement, permit = found
                dispatch = await self._dispatch(conn, record, placement, lease_s)
            return replace(dispatch, permit=permit)
        except BaseException:
            if permit is not None:
                permit.release()
            raise

    async def _claim(
        self, conn: asyncpg.Connection, tenant_cap: int, executor_lapse_s: float, batch: int
    ) -> tuple[ExecutionRecord, Placement, AttemptPermit] | None:
        executors = [_free(r) for r in await conn.fetch(_FREE_EXECUTORS, executor_lapse_s)]
        if not executors:
            return None
        for row in await conn.fetch(_CANDIDATES, tenant_cap, batch):
            record = ExecutionRecord.from_row(row)
            cap = record.tenant_cap or tenant_cap
            if not await self._tenant_has_room(conn, record.tenant, cap):
                continue
            placed = await self._place(conn, record, executors)
            if placed is not None:
                return (record, *placed)
        return None

    async def _tenant_has_room(self, conn: asyncpg.Connection, tenant: str, cap: int) -> bool:
        """Re-counts the tenant's running executions under a per-tenant lock: two replicas
        that both saw room for one more must not both take it. Busy lock: try later."""
        key = f"{self.schema}:tenant:{tenant}"
        if not await conn.fetchval("SELECT pg_try_advisory_xact_lock(hashtext($1))", key):
            return False
        running = await conn.fetchval(
            f"SELECT count(*) FROM executions WHERE tenant = $1 AND state IN {ACTIVE}", tenant
        )
        return bool(running < cap)

    async def _place(
        self, conn: asyncpg.Connection, record: ExecutionRecord, executors: list[FreeExecutor]
    ) -> tuple[Placement, AttemptPermit] | None:
        """The best executor with a free slot whose breakers admit one more attempt."""
        failed_on = await conn.fetchval(
            "SELECT coalesce(array_agg(executor_id), '{}') FROM attempts"
            " WHERE execution_id = $1 AND state = 'FAILED'",
            record.id,
        )
        job = Job(
            node_types=frozenset(record.node_types),
            models=frozenset(m.sha256 for m in record.models),
            failed_on=frozenset(failed_on),
        )
        for executor in self.router.candidates(executors, job):
            if not await self._slot_free(conn, executor):
                continue
            permit = self.router.admit(executor.placement)
            if permit is not None:
                return executor.placement, permit
        return None

    async def _slot_free(self, conn: asyncpg.Connection, executor: FreeExecutor) -> bool:
        """Re-counts the executor's attempts under a per-executor lock, so two replicas never
        fill its last slot twice. An advisory lock rather than the row lock: heartbeats update
        the row all the time and must not make a claim pass the executor by."""
        executor_id = executor.placement.executor_id
        key = f"{self.schema}:executor:{executor_id}"
        if not await conn.fetchval("SELECT pg_try_advisory_xact_lock(hashtext($1))", key):
            return False
        busy = await conn.fetchval(
            f"SELECT count(*) FROM attempts WHERE executor_id = $1 AND state IN {ACTIVE}",
            executor_id,
        )
        return bool(busy < executor.slots)

    async def _dispatch(
        self,
        conn: asyncpg.Connection,
        record: ExecutionRecord,
        placement: Placement,
        lease_s: float,
    ) -> Dispatch:
        check_transition(record.state, State.DISPATCHED)
        attempt = record.attempt + 1
        await conn.execute(
            "INSERT INTO attempts (execution_id, number, executor_id, executor_address,"
            " provider, transport, gpu_name, state, dispatched_at)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, 'DISPATCHED', now())",
            record.id,
            attempt,
            placement.executor_id,
            placement.address,
            placement.provider,
            placement.transport,
            placement.gpu_name,
        )
        row = await conn.fetchrow(
            "UPDATE executions SET state = 'DISPATCHED', attempt = $2, executor_id = $3,"
            " provider = $4, lease_expires_at = now() + make_interval(secs => $5),"
            " last_sequence = last_sequence + 1, updated_at = now()"
            " WHERE id = $1 RETURNING *",
            record.id,
            attempt,
            placement.executor_id,
            placement.provider,
            lease_s,
        )
        updated = ExecutionRecord.from_row(row)
        await self.journal.append(conn, build_event(updated, EventType.DISPATCHED))
        inputs = await conn.fetch(
            "SELECT * FROM inputs WHERE execution_id = $1 ORDER BY name", record.id
        )
        return Dispatch(updated, attempt, placement, [InputRecord.from_row(r) for r in inputs])

    async def stats(self, executor_lapse_s: float) -> QueueStats:
        """Waiting executions by priority, tenant and provider; live executors' slots by
        provider."""
        rows = await self.pool.fetch(
            f"SELECT priority, tenant, coalesce(provider, '') AS provider, count(*) AS depth,"
            f" extract(epoch FROM now() - min(queued_since)) AS oldest"
            f" FROM executions WHERE state IN {WAITING}"
            f" GROUP BY priority, tenant, provider ORDER BY priority DESC, tenant, provider"
        )
        running = await self.pool.fetchval(
            f"SELECT count(*) FROM executions WHERE state IN {ACTIVE}"
        )
        slices = [
            QueueSlice(
                r["priority"], r["tenant"], r["provider"], r["depth"], max(0.0, float(r["oldest"]))
            )
            for r in rows
        ]
        return QueueStats(
            depth=sum(s.depth for s in slices),
            oldest_wait_s=max((s.oldest_wait_s for s in slices), default=0.0),
            running=running,
            slices=slices,
            providers=await self._provider_loads(executor_lapse_s),
        )

    async def _provider_loads(self, executor_lapse_s: float) -> list[ProviderLoad]:
        rows = await self.pool.fetch(
            f"""
            SELECT x.provider, count(*) AS executors, sum(x.slots) AS slots,
                   sum(b.busy) AS busy
            FROM executors x
            CROSS JOIN LATERAL (SELECT count(*) AS busy FROM attempts a
                                WHERE a.executor_id = x.id AND a.state IN {ACTIVE}) b
            WHERE x.last_seen > now() - make_interval(secs => $1)
            GROUP BY x.provider ORDER BY x.provider
            """,
            executor_lapse_s,
        )
        return [
            ProviderLoad(r["provider"], r["executors"], int(r["slots"]), int(r["busy"]))
            for r in rows
        ]

    async def next_wakeup_s(self) -> float | None:
        """Seconds until the earliest retry backoff ends, so the dispatcher sleeps no longer."""
        value = await self.pool.fetchval(
            f"SELECT extract(epoch FROM min(not_before) - now()) FROM executions"
            f" WHERE state IN {WAITING} AND not_before > now()"
        )
        return None if value is None else max(0.0, float(value))


def _free(row: asyncpg.Record) -> FreeExecutor:
    return FreeExecutor(
        placement=Placement(
            row["id"], row["address"], row["provider"], row["transport"], row["gpu_name"]
        ),
        node_types=frozenset(row["node_types"]),
        free_slots=row["slots"] - row["busy"],
        slots=row["slots"],
        gpu_name=row["gpu_name"],
        gpu_free_memory_bytes=row["gpu_free_memory_bytes"],
        cached_models=frozenset(row["cached_models"]),
    )
