"""The durable queue: claiming the next execution for a free executor, and queue statistics."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace

import asyncpg

from services.scheduler.breaker import AttemptPermit
from services.scheduler.journal import Journal
from services.scheduler.lifecycle import State, check_transition
from services.scheduler.records import Dispatch, ExecutionRecord, InputRecord, Placement
from services.scheduler.routing import FreeExecutor, Job, Router
from services.scheduler.store import ACTIVE, WAITING
from services.scheduler.views import EventType, build_event

# Candidates are locked a batch at a time: replicas skip each other's. Each environment with
# a free executor (the pools: $3 its name, $4 whether one of them runs anything, $5 the node
# types they have as a JSON array) is read on its own, in queue order along its own index, so
# executions no free executor can take (another environment's, or needing node types none
# has) never fill the batch: a head of the queue nobody can serve now does not block the ones
# behind it. For the same reason, only those of tenants below their concurrency cap. Each
# tenant's running count is taken once per claim, not once per candidate: counting walks the
# index of active executions, which under churn holds many entries not yet vacuumed.
_CANDIDATES = f"""
WITH running AS (
    SELECT tenant, count(*) AS n FROM executions WHERE state IN {ACTIVE} GROUP BY tenant
), pools AS (
    SELECT p.environment, p.anything,
           ARRAY(SELECT jsonb_array_elements_text(p.types::jsonb)) AS types
    FROM unnest($3::text[], $4::bool[], $5::text[]) AS p(environment, anything, types)
)
SELECT c.* FROM pools p CROSS JOIN LATERAL (
    SELECT e.* FROM executions e LEFT JOIN running r ON r.tenant = e.tenant
    WHERE e.environment = p.environment AND e.state IN {WAITING} AND e.not_before <= now()
      AND (p.anything OR e.node_types <@ p.types)
      AND coalesce(r.n, 0) < coalesce(e.tenant_cap, $1)
    ORDER BY e.priority DESC, e.created_at, e.id
    LIMIT $2
    FOR UPDATE OF e SKIP LOCKED
) c
ORDER BY c.priority DESC, c.created_at, c.id
"""

# Live executors with a free slot. Read before the queue: a claim then never sees an executor
# that registered after work it does not see yet, so priority order holds.
_FREE_EXECUTORS = f"""
SELECT x.id, x.address, x.provider, x.transport, x.node_types, x.slots, x.gpu_name,
       x.gpu_free_memory_bytes, x.cached_models, x.environment, b.busy
FROM executors x
CROSS JOIN LATERAL (SELECT count(*) AS busy FROM attempts a
                    WHERE a.executor_id = x.id AND a.state IN {ACTIVE}) b
WHERE x.last_seen > now() - make_interval(secs => $1) AND x.slots > b.busy
"""


# A claim's dispatches in one statement: their attempts, and the executions they move.
_DISPATCH = """
WITH d AS (
    SELECT * FROM unnest($1::text[], $2::int[], $3::text[], $4::text[], $5::text[], $6::text[],
                         $7::text[])
        AS d(id, number, executor_id, address, provider, transport, gpu_name)
), attempt AS (
    INSERT INTO attempts (execution_id, number, executor_id, executor_address, provider,
                          transport, gpu_name, state, dispatched_at)
    SELECT id, number, executor_id, address, provider, transport, gpu_name, 'DISPATCHED', now()
    FROM d
)
UPDATE executions e SET state = 'DISPATCHED', attempt = d.number, executor_id = d.executor_id,
    provider = d.provider, lease_expires_at = now() + make_interval(secs => $8),
    last_sequence = e.last_sequence + 1, updated_at = now()
FROM d WHERE e.id = d.id
RETURNING e.*
"""


@dataclass(frozen=True)
class QueueSlice:
    priority: int
    tenant: str
    # The provider of the last attempt, for executions waiting for a retry; "" before any.
    provider: str
    depth: int
    oldest_wait_s: float
    environment: str = "native"


@dataclass(frozen=True)
class ProviderLoad:
    provider: str
    executors: int
    slots: int
    busy_slots: int


@dataclass(frozen=True)
class EnvironmentLoad:
    """One environment's queue and executors: what its pool's autoscaling reads."""

    environment: str
    depth: int = 0
    oldest_wait_s: float = 0.0
    running: int = 0
    executors: int = 0
    slots: int = 0
    busy_slots: int = 0
    # The live executors of each provider in the environment, with their busy slots.
    providers: tuple[ProviderLoad, ...] = ()

    def provider(self, name: str) -> ProviderLoad | None:
        return next((p for p in self.providers if p.provider == name), None)


@dataclass(frozen=True)
class QueueStats:
    depth: int
    oldest_wait_s: float
    running: int
    slices: list[QueueSlice]
    providers: list[ProviderLoad]
    environments: list[EnvironmentLoad] = field(default_factory=list)

    def environment(self, name: str) -> EnvironmentLoad:
        found = next((e for e in self.environments if e.environment == name), None)
        return found or EnvironmentLoad(name)


class Queue:
    """Claims executions for executors, several replicas at once without double dispatch."""

    def __init__(self, pool: asyncpg.Pool, journal: Journal, schema: str, router: Router) -> None:
        self.pool = pool
        self.journal = journal
        self.schema = schema
        self.router = router

    async def claim(
        self, *, tenant_cap: int, executor_lapse_s: float, lease_s: float, limit: int = 32
    ) -> list[Dispatch]:
        """Dispatches up to ``limit`` waiting executions that free executors can take, in
        one transaction: priority first, then age.

        Each dispatch holds its breakers' permit; if the transaction fails, every permit taken
        is given back.
        """
        claim = _Claim(self, tenant_cap, lease_s)
        try:
            async with self.pool.acquire() as conn, conn.transaction():
                await claim.run(conn, executor_lapse_s, limit)
        except BaseException:
            for _record, _placement, permit in claim.placed:
                if permit is not None:
                    permit.release()
            raise
        return claim.dispatches

    async def lock_tenant(self, conn: asyncpg.Connection, tenant: str) -> int | None:
        """The tenant's running executions, counted under a per-tenant lock so that two
        replicas that both saw room for one more cannot both take it; None when another
        replica holds the lock (try later)."""
        key = f"{self.schema}:tenant:{tenant}"
        if not await conn.fetchval("SELECT pg_try_advisory_xact_lock(hashtext($1))", key):
            return None
        running: int = await conn.fetchval(
            f"SELECT count(*) FROM executions WHERE tenant = $1 AND state IN {ACTIVE}", tenant
        )
        return running

    async def lock_executor(self, conn: asyncpg.Connection, executor: FreeExecutor) -> int:
        """The executor's free slots, counted under a per-executor lock so that two replicas
        never fill its last slot twice; 0 when another replica holds the lock. An advisory
        lock rather than the row lock: heartbeats update the row all the time and must not
        make a claim pass the executor by."""
        key = f"{self.schema}:executor:{executor.id}"
        if not await conn.fetchval("SELECT pg_try_advisory_xact_lock(hashtext($1))", key):
            return 0
        busy: int = await conn.fetchval(
            f"SELECT count(*) FROM attempts WHERE executor_id = $1 AND state IN {ACTIVE}",
            executor.id,
        )
        return max(0, executor.slots - busy)

    async def dispatch_all(
        self,
        conn: asyncpg.Connection,
        placed: list[tuple[ExecutionRecord, Placement]],
        lease_s: float,
    ) -> list[Dispatch]:
        """Moves each locked execution to DISPATCHED with a new attempt on its placement, and
        writes their events: a few statements for the whole claim."""
        for record, _placement in placed:
            check_transition(record.state, State.DISPATCHED)
        rows = await conn.fetch(
            _DISPATCH,
            [r.id for r, _ in placed],
            [r.attempt + 1 for r, _ in placed],
            [p.executor_id for _, p in placed],
            [p.address for _, p in placed],
            [p.provider for _, p in placed],
            [p.transport for _, p in placed],
            [p.gpu_name for _, p in placed],
            lease_s,
        )
        updated = {row["id"]: ExecutionRecord.from_row(row) for row in rows}
        if len(updated) != len(placed):
            raise RuntimeError("a claimed execution was not dispatched")  # locked: cannot be
        records = [updated[r.id] for r, _ in placed]
        await self.journal.append_many(
            conn, [build_event(r, EventType.DISPATCHED) for r in records]
        )
        inputs: dict[str, list[InputRecord]] = {r.id: [] for r in records}
        for row in await conn.fetch(
            "SELECT * FROM inputs WHERE execution_id = ANY($1) ORDER BY execution_id, name",
            list(inputs),
        ):
            inputs[row["execution_id"]].append(InputRecord.from_row(row))
        return [
            Dispatch(r, r.attempt, p, inputs[r.id])
            for r, (_, p) in zip(records, placed, strict=True)
        ]

    async def stats(self, executor_lapse_s: float) -> QueueStats:
        """Waiting executions by priority, tenant, provider and environment; running ones and
        live executors' slots by environment and provider."""
        rows = await self.pool.fetch(
            f"SELECT priority, tenant, coalesce(provider, '') AS provider, environment,"
            f" count(*) AS depth, extract(epoch FROM now() - min(queued_since)) AS oldest"
            f" FROM executions WHERE state IN {WAITING}"
            f" GROUP BY priority, tenant, provider, environment"
            f" ORDER BY priority DESC, tenant, provider, environment"
        )
        running = {
            r["environment"]: r["n"]
            for r in await self.pool.fetch(
                f"SELECT environment, count(*) AS n FROM executions WHERE state IN {ACTIVE}"
                f" GROUP BY environment"
            )
        }
        slices = [
            QueueSlice(
                r["priority"],
                r["tenant"],
                r["provider"],
                r["depth"],
                max(0.0, float(r["oldest"])),
                r["environment"],
            )
            for r in rows
        ]
        loads = await self._loads(executor_lapse_s)
        return QueueStats(
            depth=sum(s.depth for s in slices),
            oldest_wait_s=max((s.oldest_wait_s for s in slices), default=0.0),
            running=sum(running.values()),
            slices=slices,
            providers=_by_provider(loads),
            environments=_by_environment(slices, running, loads),
        )

    async def _loads(self, executor_lapse_s: float) -> dict[tuple[str, str], ProviderLoad]:
        """Live executors' slots by (environment, provider)."""
        rows = await self.pool.fetch(
            f"""
            SELECT x.environment, x.provider, count(*) AS executors, sum(x.slots) AS slots,
                   sum(b.busy) AS busy
            FROM executors x
            CROSS JOIN LATERAL (SELECT count(*) AS busy FROM attempts a
                                WHERE a.executor_id = x.id AND a.state IN {ACTIVE}) b
            WHERE x.last_seen > now() - make_interval(secs => $1)
            GROUP BY x.environment, x.provider ORDER BY x.environment, x.provider
            """,
            executor_lapse_s,
        )
        return {
            (r["environment"], r["provider"]): ProviderLoad(
                r["provider"], r["executors"], int(r["slots"]), int(r["busy"])
            )
            for r in rows
        }

    async def next_wakeup_s(self) -> float | None:
        """Seconds until the earliest retry backoff ends, so the dispatcher sleeps no longer."""
        value = await self.pool.fetchval(
            f"SELECT extract(epoch FROM min(not_before) - now()) FROM executions"
            f" WHERE state IN {WAITING} AND not_before > now()"
        )
        return None if value is None else max(0.0, float(value))


def _by_provider(loads: dict[tuple[str, str], ProviderLoad]) -> list[ProviderLoad]:
    out: dict[str, ProviderLoad] = {}
    for (_env, provider), load in sorted(loads.items(), key=lambda kv: kv[0][1]):
        was = out.get(provider, ProviderLoad(provider, 0, 0, 0))
        out[provider] = ProviderLoad(
            provider,
            was.executors + load.executors,
            was.slots + load.slots,
            was.busy_slots + load.busy_slots,
        )
    return list(out.values())


def _by_environment(
    slices: list[QueueSlice],
    running: dict[str, int],
    loads: dict[tuple[str, str], ProviderLoad],
) -> list[EnvironmentLoad]:
    names = {s.environment for s in slices} | set(running) | {env for env, _ in loads}
    out = []
    for name in sorted(names):
        mine = [s for s in slices if s.environment == name]
        providers = tuple(load for (env, _), load in sorted(loads.items()) if env == name)
        out.append(
            EnvironmentLoad(
                environment=name,
                depth=sum(s.depth for s in mine),
                oldest_wait_s=max((s.oldest_wait_s for s in mine), default=0.0),
                running=running.get(name, 0),
                executors=sum(p.executors for p in providers),
                slots=sum(p.slots for p in providers),
                busy_slots=sum(p.busy_slots for p in providers),
                providers=providers,
            )
        )
    return out


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
        environment=row["environment"],
    )


def pools_of(executors: list[FreeExecutor]) -> tuple[list[str], list[bool], list[str]]:
    """The claim's pools: each environment with free executors, whether one of them runs
    anything, and the node types they have (a JSON array)."""
    anything: dict[str, bool] = {}
    types: dict[str, set[str]] = {}
    for x in executors:
        anything[x.environment] = anything.get(x.environment, False) or not x.node_types
        types.setdefault(x.environment, set()).update(x.node_types)
    envs = sorted(anything)
    return envs, [anything[e] for e in envs], [json.dumps(sorted(types[e])) for e in envs]


class _Claim:
    """One claim transaction: candidates in queue order, each placed on the best free
    executor, with tenants' and executors' counts taken once under their locks and kept up
    to date as the transaction dispatches."""

    def __init__(self, queue: Queue, tenant_cap: int, lease_s: float) -> None:
        self.queue = queue
        self.tenant_cap = tenant_cap
        self.lease_s = lease_s
        # Executions placed so far, with the breakers' permits they hold.
        self.placed: list[tuple[ExecutionRecord, Placement, AttemptPermit | None]] = []
        self.dispatches: list[Dispatch] = []
        self._running: dict[str, int | None] = {}
        self._free: dict[str, int] = {}

    async def run(self, conn: asyncpg.Connection, executor_lapse_s: float, limit: int) -> None:
        executors = [_free(r) for r in await conn.fetch(_FREE_EXECUTORS, executor_lapse_s)]
        want = min(limit, sum(x.free_slots for x in executors))
        if want == 0:
            return
        rows = await conn.fetch(_CANDIDATES, self.tenant_cap, 2 * want + 8, *pools_of(executors))
        for row in rows:
            if len(self.placed) >= want:
                break
            await self._consider(conn, ExecutionRecord.from_row(row), executors)
        if self.placed:
            dispatches = await self.queue.dispatch_all(
                conn, [(r, p) for r, p, _ in self.placed], self.lease_s
            )
            self.dispatches = [
                replace(d, permit=permit)
                for d, (_, _, permit) in zip(dispatches, self.placed, strict=True)
            ]

    async def _consider(
        self, conn: asyncpg.Connection, record: ExecutionRecord, executors: list[FreeExecutor]
    ) -> None:
        if record.tenant not in self._running:
            self._running[record.tenant] = await self.queue.lock_tenant(conn, record.tenant)
        running = self._running[record.tenant]
        if running is None or running >= (record.tenant_cap or self.tenant_cap):
            return
        placed = await self._place(conn, record, executors)
        if placed is None:
            return
        placement, permit = placed
        self.placed.append((record, placement, permit))
        self._running[record.tenant] = running + 1
        self._free[placement.executor_id] -= 1

    async def _place(
        self, conn: asyncpg.Connection, record: ExecutionRecord, executors: list[FreeExecutor]
    ) -> tuple[Placement, AttemptPermit] | None:
        """The best executor with a free slot whose breakers admit one more attempt."""
        failed_on: list[str] = []
        if record.attempt > 0:
            failed_on = await conn.fetchval(
                "SELECT coalesce(array_agg(executor_id), '{}') FROM attempts"
                " WHERE execution_id = $1 AND state = 'FAILED'",
                record.id,
            )
        job = Job(
            environment=record.environment,
            node_types=frozenset(record.node_types),
            models=frozenset(m.sha256 for m in record.models),
            failed_on=frozenset(failed_on),
        )
        # Slots this transaction filled count: the next execution sees each executor's load.
        now = [replace(x, free_slots=self._free.get(x.id, x.free_slots)) for x in executors]
        for executor in self.queue.router.candidates([x for x in now if x.free_slots > 0], job):
            if executor.id not in self._free:
                self._free[executor.id] = await self.queue.lock_executor(conn, executor)
            if self._free[executor.id] <= 0:
                continue
            permit = self.queue.router.admit(executor.placement)
            if permit is not None:
                return executor.placement, permit
        return None
