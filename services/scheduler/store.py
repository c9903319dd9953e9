"""Executions in PostgreSQL: every change locks the row, checks the state machine and the
attempt fence, and writes its event in the same transaction."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal

import asyncpg
from google.rpc import status_pb2

from comfyfleet.common.errors import (
    Cancelled,
    DeadlineExceeded,
    FieldViolation,
    InvalidArgument,
    NotFound,
)
from comfyfleet.common.telemetry import current_traceparent
from comfyfleet.executions.v1 import executions_pb2
from services.scheduler.cost import DEFAULT_PRICES, PriceTable
from services.scheduler.failures import exhausted
from services.scheduler.journal import Journal
from services.scheduler.lifecycle import (
    Backoff,
    GiveUp,
    Retry,
    State,
    accepts_update,
    after_infrastructure_failure,
    check_transition,
)
from services.scheduler.models import ModelNeed
from services.scheduler.records import (
    ExecutionRecord,
    ExecutionView,
    InputRecord,
    OutputRecord,
    Placement,
)
from services.scheduler.requests import NewExecution
from services.scheduler.views import EventType, OutputLinks, build_event

ACTIVE = "('DISPATCHED', 'RUNNING')"
WAITING = "('QUEUED', 'RETRYING')"
NOT_TERMINAL = "('QUEUED', 'DISPATCHED', 'RUNNING', 'RETRYING')"

# Inserts nothing when the environment is gone: the share lock on its row keeps it from
# being deleted until the insert commits (a delete checks for waiting executions under an
# exclusive lock of the row).
_INSERT_EXECUTION = """
WITH env AS (SELECT name FROM environments WHERE name = $17 FOR KEY SHARE)
INSERT INTO executions (
    id, tenant, state, workflow_json, node_types, priority, labels, request_id, request_hash,
    max_attempts, queue_timeout_s, run_timeout_s, queued_since, not_before, created_at,
    updated_at, last_sequence, traceparent, models, deadline_at, tenant_cap, webhook_events,
    environment)
SELECT $1, $2, 'QUEUED', $3, $4, $5, $6, $7, $8, $9, $10, $11, now(), now(), now(), now(), 1,
       $12, $13, now() + make_interval(secs => $14), $15, $16, env.name
FROM env
ON CONFLICT (tenant, request_id) WHERE request_id IS NOT NULL DO NOTHING
RETURNING *
"""


# An attempt's cost, added to its execution and to its tenant's month.
_CHARGE = """
WITH attempt AS (
    UPDATE attempts SET cost_usd = $3 WHERE execution_id = $1 AND number = $2
), execution AS (
    UPDATE executions SET cost_usd = cost_usd + $3 WHERE id = $1
)
INSERT INTO tenant_spend (tenant, period, spent_usd)
VALUES ($4, date_trunc('month', now() AT TIME ZONE 'UTC')::date, $3)
ON CONFLICT (tenant, period) DO UPDATE SET spent_usd = tenant_spend.spent_usd + $3
"""


# DISPATCHED -> RUNNING for the current attempt only: the row lock the UPDATE takes and its
# WHERE (re-checked on the newest row version after a wait) are the fence.
_START = """
WITH e AS (
    UPDATE executions SET state = 'RUNNING', started_at = now(),
        lease_expires_at = now() + make_interval(secs => $3),
        last_sequence = last_sequence + 1, updated_at = now()
    WHERE id = $1 AND attempt = $2 AND state = 'DISPATCHED'
    RETURNING *
), attempt AS (
    UPDATE attempts SET state = 'RUNNING', started_at = now()
    WHERE execution_id = $1 AND number = $2 AND EXISTS (SELECT 1 FROM e)
)
SELECT * FROM e
"""

# Locks the execution when the attempt is its current one, and ends that attempt: the
# execution's row and what the attempt ran, for its cost.
_LOCK_AND_END = f"""
WITH x AS (
    SELECT * FROM executions WHERE id = $1 AND attempt = $2 AND state IN {ACTIVE} FOR UPDATE
), a AS (
    UPDATE attempts SET state = $3, ended_at = now(), error = $4
    WHERE execution_id = $1 AND number = $2 AND EXISTS (SELECT 1 FROM x)
    RETURNING provider AS _provider, gpu_name AS _gpu_name,
              extract(epoch FROM now() - started_at) AS _ran_s
)
SELECT x.*, a.* FROM x LEFT JOIN a ON true
"""
_END_COLUMNS = ("_provider", "_gpu_name", "_ran_s")

# SUCCEEDED with its outputs and the attempt's cost ($5), in one statement.
_SUCCEED = """
WITH o AS (
    INSERT INTO outputs (execution_id, attempt, slot, key, node_id, filename, subfolder, kind,
                         content_type, size_bytes, sha256)
    SELECT $1::text, $2::int, o.* FROM unnest($6::int[], $7::text[], $8::text[], $9::text[],
        $10::text[], $11::text[], $12::text[], $13::bigint[], $14::text[]) AS o
), attempt AS (
    UPDATE attempts SET cost_usd = $5 WHERE execution_id = $1 AND number = $2 AND $5::float8 > 0
), spend AS (
    INSERT INTO tenant_spend (tenant, period, spent_usd)
    SELECT $4::text, date_trunc('month', now() AT TIME ZONE 'UTC')::date, $5::float8
    WHERE $5::float8 > 0
    ON CONFLICT (tenant, period) DO UPDATE SET spent_usd = tenant_spend.spent_usd + $5
)
UPDATE executions SET state = 'SUCCEEDED', ended_at = now(), lease_expires_at = NULL,
    progress = NULL, metrics = $3, started_at = coalesce(started_at, now()),
    cost_usd = cost_usd + $5, last_sequence = last_sequence + 1, updated_at = now()
WHERE id = $1
RETURNING *
"""


@dataclass(frozen=True)
class Fenced:
    """An attempt to change an execution on behalf of one of its attempts."""

    execution_id: str
    attempt: int


class ExecutionStore:
    """The executions table and everything that hangs off it."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        journal: Journal,
        backoff: Backoff,
        event_links: OutputLinks,
        prices: PriceTable = DEFAULT_PRICES,
    ) -> None:
        self.pool = pool
        self.journal = journal
        self.backoff = backoff
        self.event_links = event_links
        self.prices = prices

    # ---- creating and reading -------------------------------------------------------------

    async def create(
        self,
        tenant: str,
        execution_id: str,
        new: NewExecution,
        inputs: Sequence[InputRecord],
        models: Sequence[ModelNeed] = (),
        tenant_cap: int | None = None,
    ) -> tuple[ExecutionRecord, bool]:
        """Inserts the execution, its inputs and its first event in one transaction.

        Returns the execution and whether it is new: with a request_id that is already taken
        the first execution is returned and nothing is written.
        """
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                _INSERT_EXECUTION,
                execution_id,
                tenant,
                new.workflow_json,
                new.node_types,
                new.priority,
                json.dumps(new.labels),
                new.request_id,
                new.fingerprint(),
                new.max_attempts,
                new.queue_timeout_s,
                new.run_timeout_s,
                current_traceparent(),
                json.dumps([m.to_json() for m in models]),
                new.timeout_s,
                tenant_cap,
                new.webhook_events,
                new.environment,
            )
            if row is None:
                existing = None
                if new.request_id is not None:
                    existing = await self._by_request_id(conn, tenant, new.request_id)
                if existing is None:  # nothing conflicted: the environment was deleted
                    raise InvalidArgument(
                        f"environment {new.environment!r} does not exist",
                        [
                            FieldViolation(
                                "environment",
                                "no environment has this name",
                                "ENVIRONMENT_NOT_FOUND",
                            )
                        ],
                        reason="ENVIRONMENT_NOT_FOUND",
                    )
                return existing, False
            await conn.executemany(
                "INSERT INTO inputs (execution_id, name, key, size_bytes, content_type, sha256)"
                " VALUES ($1, $2, $3, $4, $5, $6)",
                [
                    (execution_id, i.name, i.key, i.size_bytes, i.content_type, i.sha256)
                    for i in inputs
                ],
            )
            record = ExecutionRecord.from_row(row)
            await self.journal.append(conn, build_event(record, EventType.QUEUED))
            return record, True

    async def find_by_request_id(self, tenant: str, request_id: str) -> ExecutionRecord | None:
        async with self.pool.acquire() as conn:
            return await self._by_request_id(conn, tenant, request_id)

    @staticmethod
    async def _by_request_id(
        conn: asyncpg.Connection, tenant: str, request_id: str
    ) -> ExecutionRecord | None:
        row = await conn.fetchrow(
            "SELECT * FROM executions WHERE tenant = $1 AND request_id = $2", tenant, request_id
        )
        return ExecutionRecord.from_row(row) if row else None

    async def get(self, tenant: str, execution_id: str) -> ExecutionView:
        """One execution of ``tenant``; another tenant's is as absent as a missing one."""
        async with self.pool.acquire() as conn:
            row = await conn.fetchrow(
                "SELECT * FROM executions WHERE id = $1 AND tenant = $2", execution_id, tenant
            )
            if row is None:
                raise NotFound(f"execution {execution_id!r} does not exist")
            return (await self._views(conn, [ExecutionRecord.from_row(row)]))[0]

    async def page(
        self,
        tenant: str,
        *,
        state: State | None,
        before_id: str | None,
        limit: int,
        labels: Mapping[str, str] | None = None,
    ) -> list[ExecutionView]:
        """A page of ``tenant``'s executions, newest first (ids grow with time); with
        ``labels``, only those whose labels include all of them."""
        # The label condition is written only when there is one: a prepared statement with
        # "$5 IS NULL OR labels @> $5" gets a generic plan that cannot use the GIN index.
        labelled = " AND labels @> $5::jsonb" if labels else ""
        args: list[object] = [tenant, state.value if state else None, before_id, limit]
        if labels:
            args.append(json.dumps(dict(labels)))
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT * FROM executions WHERE tenant = $1"
                " AND ($2::text IS NULL OR state = $2) AND ($3::text IS NULL OR id < $3)"
                f"{labelled} ORDER BY id DESC LIMIT $4",
                *args,
            )
            return await self._views(conn, [ExecutionRecord.from_row(r) for r in rows])

    @staticmethod
    async def _views(
        conn: asyncpg.Connection, records: list[ExecutionRecord]
    ) -> list[ExecutionView]:
        ids = [r.id for r in records]
        names: dict[str, list[str]] = {i: [] for i in ids}
        for row in await conn.fetch(
            "SELECT execution_id, name FROM inputs WHERE execution_id = ANY($1) ORDER BY name",
            ids,
        ):
            names[row["execution_id"]].append(row["name"])
        outputs: dict[str, list[OutputRecord]] = {i: [] for i in ids}
        succeeded = [r.id for r in records if r.state is State.SUCCEEDED]
        for row in await conn.fetch(
            "SELECT o.* FROM outputs o JOIN executions e ON e.id = o.execution_id"
            " AND e.attempt = o.attempt WHERE o.execution_id = ANY($1)"
            " ORDER BY o.execution_id, o.slot",
            succeeded,
        ):
            outputs[row["execution_id"]].append(OutputRecord.from_row(row))
        return [ExecutionView(r, names[r.id], outputs[r.id]) for r in records]

    async def inputs(self, execution_id: str) -> list[InputRecord]:
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT * FROM inputs WHERE execution_id = $1 ORDER BY name", execution_id
            )
            return [InputRecord.from_row(r) for r in rows]

    async def events_after(
        self, execution_id: str, after: int, limit: int = 500
    ) -> list[executions_pb2.WorkflowExecutionEvent]:
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT payload FROM events WHERE execution_id = $1 AND sequence > $2"
                " ORDER BY sequence LIMIT $3",
                execution_id,
                after,
                limit,
            )
        events = []
        for row in rows:
            event = executions_pb2.WorkflowExecutionEvent()
            event.ParseFromString(row["payload"])
            events.append(event)
        return events

    # ---- changes on behalf of an attempt (fenced) -----------------------------------------

    async def started(self, fence: Fenced, lease_s: float) -> bool:
        """DISPATCHED -> RUNNING when the executor takes the attempt; renews the lease."""
        async with self.pool.acquire() as conn:
            async with conn.transaction():
                row = await conn.fetchrow(_START, fence.execution_id, fence.attempt, lease_s)
                if row is not None:
                    updated = ExecutionRecord.from_row(row)
                    await self.journal.append(conn, build_event(updated, EventType.RUNNING))
                    return True
            # Not moved: a repeated "started" of the running attempt changes nothing; any
            # other attempt is not current.
            state = await conn.fetchval(
                "SELECT state FROM executions WHERE id = $1 AND attempt = $2",
                fence.execution_id,
                fence.attempt,
            )
            return bool(state == State.RUNNING.value)

    async def progress(
        self, fence: Fenced, progress: executions_pb2.NodeProgress, lease_s: float
    ) -> bool:
        """Records node progress, which also proves the attempt alive and renews its lease."""
        async with self.pool.acquire() as conn, conn.transaction():
            record = await self._lock_fenced(conn, fence)
            if record is None:
                return False
            updated = await self._update(
                conn,
                fence.execution_id,
                "progress = $2, lease_expires_at = now() + make_interval(secs => $3)",
                progress.SerializeToString(),
                lease_s,
            )
            await self.journal.append(
                conn, build_event(updated, EventType.PROGRESS, progress=progress)
            )
            return True

    async def succeeded(
        self,
        fence: Fenced,
        outputs: Sequence[OutputRecord],
        metrics: executions_pb2.ExecutionMetrics,
    ) -> bool:
        """Records the outputs and metrics; queue time is the scheduler's own measurement."""
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                _LOCK_AND_END, fence.execution_id, fence.attempt, "SUCCEEDED", None
            )
            if row is None:
                return False
            record = ExecutionRecord.from_row(
                {k: v for k, v in row.items() if k not in _END_COLUMNS}
            )
            check_transition(record.state, State.SUCCEEDED)
            cost = self._cost(row["_provider"], row["_gpu_name"], row["_ran_s"])
            final = executions_pb2.ExecutionMetrics()
            final.CopyFrom(metrics)
            started = record.started_at or record.updated_at
            final.queue_time_seconds = max(0.0, (started - record.created_at).total_seconds())
            updated = ExecutionRecord.from_row(
                await conn.fetchrow(
                    _SUCCEED,
                    fence.execution_id,
                    fence.attempt,
                    final.SerializeToString(),
                    record.tenant,
                    cost,
                    [o.slot for o in outputs],
                    [o.key for o in outputs],
                    [o.node_id for o in outputs],
                    [o.filename for o in outputs],
                    [o.subfolder for o in outputs],
                    [o.kind for o in outputs],
                    [o.content_type for o in outputs],
                    [o.size_bytes for o in outputs],
                    [o.sha256 for o in outputs],
                )
            )
            links = [self.event_links.output(o) for o in outputs]
            await self.journal.append(
                conn, build_event(updated, EventType.SUCCEEDED, outputs=links)
            )
            return True

    async def workflow_failed(self, fence: Fenced, error: status_pb2.Status) -> bool:
        """A workflow error ends the execution: another attempt would fail the same way."""
        async with self.pool.acquire() as conn, conn.transaction():
            record = await self._lock_fenced(conn, fence)
            if record is None:
                return False
            await self._end_attempt(conn, record, "FAILED", error)
            await self._fail(conn, record, error)
            return True

    async def infrastructure_failure(
        self, fence: Fenced, error: status_pb2.Status, *, require: str = "true"
    ) -> bool:
        """Another attempt after a backoff, or FAILED once every attempt is used.

        ``require`` is an extra SQL condition re-checked under the row lock, for the reaper
        whose candidate may have changed since it looked.
        """
        async with self.pool.acquire() as conn, conn.transaction():
            record = await self._lock_fenced(conn, fence, require)
            if record is None:
                return False
            await self._end_attempt(conn, record, "FAILED", error)
            decision = after_infrastructure_failure(
                record.attempt, record.max_attempts, self.backoff
            )
            if isinstance(decision, GiveUp):
                errors = await self._attempt_errors(conn, record.id)
                await self._fail(conn, record, exhausted(errors or [error], record.attempt))
                return True
            await self._retry(conn, record, decision, error)
            return True

    @staticmethod
    async def _attempt_errors(
        conn: asyncpg.Connection, execution_id: str
    ) -> list[status_pb2.Status]:
        """The errors of the execution's attempts, first to last."""
        rows = await conn.fetch(
            "SELECT error FROM attempts WHERE execution_id = $1 AND error IS NOT NULL"
            " ORDER BY number",
            execution_id,
        )
        return [status_pb2.Status.FromString(r["error"]) for r in rows]

    async def _retry(
        self,
        conn: asyncpg.Connection,
        record: ExecutionRecord,
        decision: Retry,
        error: status_pb2.Status,
    ) -> None:
        check_transition(record.state, State.RETRYING)
        # The backoff is not queue time: the queue timeout counts from when it ends.
        updated = await self._update(
            conn,
            record.id,
            "state = 'RETRYING', lease_expires_at = NULL, progress = NULL, started_at = NULL,"
            " not_before = now() + make_interval(secs => $2),"
            " queued_since = now() + make_interval(secs => $2)",
            decision.delay_s,
        )
        await self.journal.append(conn, build_event(updated, EventType.RETRYING, error=error))

    async def _fail(
        self, conn: asyncpg.Connection, record: ExecutionRecord, error: status_pb2.Status
    ) -> ExecutionRecord:
        check_transition(record.state, State.FAILED)
        updated = await self._update(
            conn,
            record.id,
            "state = 'FAILED', error = $2, ended_at = now(), lease_expires_at = NULL",
            error.SerializeToString(),
        )
        await self.journal.append(conn, build_event(updated, EventType.FAILED, error=error))
        return updated

    async def renew_lease(self, fence: Fenced, lease_s: float) -> tuple[bool, bool]:
        """(current, renewed): the lease is renewed only while the attempt is current and its
        executor has heartbeated within the last lease; otherwise it runs out and the reaper
        hands the execution to another attempt."""
        row = await self.pool.fetchrow(
            f"""
            WITH current AS (
                SELECT id, executor_id FROM executions
                WHERE id = $1 AND attempt = $2 AND state IN {ACTIVE}
            ), renewed AS (
                UPDATE executions e SET lease_expires_at = now() + make_interval(secs => $3)
                FROM current c
                WHERE e.id = c.id AND EXISTS (
                    SELECT 1 FROM executors x WHERE x.id = c.executor_id
                    AND x.last_seen > now() - make_interval(secs => $3))
                RETURNING e.id
            )
            SELECT (SELECT count(*) FROM current) AS current,
                   (SELECT count(*) FROM renewed) AS renewed
            """,
            fence.execution_id,
            fence.attempt,
            lease_s,
        )
        return bool(row["current"]), bool(row["renewed"])

    # ---- cancellation and timeouts --------------------------------------------------------

    async def cancel(
        self, tenant: str, execution_id: str
    ) -> tuple[ExecutionView, Placement | None]:
        """Cancels a waiting or running execution; a finished one is returned unchanged.

        Returns the placement of the attempt that was running, so the caller can ask its
        executor to stop.
        """
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                "SELECT * FROM executions WHERE id = $1 AND tenant = $2 FOR UPDATE",
                execution_id,
                tenant,
            )
            if row is None:
                raise NotFound(f"execution {execution_id!r} does not exist")
            record = ExecutionRecord.from_row(row)
            placement = None
            if not record.state.terminal:
                placement = await self._placement(conn, record) if record.state.active else None
                record = await self._cancel(conn, record)
            return (await self._views(conn, [record]))[0], placement

    async def _cancel(self, conn: asyncpg.Connection, record: ExecutionRecord) -> ExecutionRecord:
        check_transition(record.state, State.CANCELLED)
        error = Cancelled("the execution was cancelled", reason="EXECUTION_CANCELLED").to_status()
        if record.state.active:
            await self._end_attempt(conn, record, "CANCELLED", None)
        updated = await self._update(
            conn,
            record.id,
            "state = 'CANCELLED', error = $2, ended_at = now(), lease_expires_at = NULL",
            error.SerializeToString(),
        )
        await self.journal.append(conn, build_event(updated, EventType.CANCELLED, error=error))
        return updated

    async def expired_leases(self, limit: int = 100) -> list[Fenced]:
        rows = await self.pool.fetch(
            f"SELECT id, attempt FROM executions WHERE state IN {ACTIVE}"
            " AND lease_expires_at < now() ORDER BY lease_expires_at LIMIT $1",
            limit,
        )
        return [Fenced(r["id"], r["attempt"]) for r in rows]

    async def overdue_runs(self, grace_s: float, limit: int = 100) -> list[Fenced]:
        """Running attempts past their run timeout plus ``grace_s`` for the executor to report
        its own timeout first."""
        rows = await self.pool.fetch(
            "SELECT id, attempt FROM executions WHERE state = 'RUNNING'"
            " AND started_at + make_interval(secs => run_timeout_s + $1) < now() LIMIT $2",
            grace_s,
            limit,
        )
        return [Fenced(r["id"], r["attempt"]) for r in rows]

    async def fail_overdue_run(self, fence: Fenced, grace_s: float) -> Placement | None:
        """Fails an attempt that ran too long; not retried, since another would too.

        Returns the attempt's placement, so the caller can tell the executor to stop.
        """
        async with self.pool.acquire() as conn, conn.transaction():
            record = await self._lock_fenced(
                conn,
                fence,
                "state = 'RUNNING' AND started_at + make_interval(secs => run_timeout_s + "
                f"{float(grace_s)!r}) < now()",
            )
            if record is None:
                return None
            error = DeadlineExceeded(
                f"the attempt ran longer than its run timeout of {record.run_timeout_s:g}s",
                reason="RUN_TIMEOUT",
            ).to_status()
            placement = await self._placement(conn, record)
            await self._end_attempt(conn, record, "FAILED", error)
            await self._fail(conn, record, error)
            return placement

    async def past_deadline(self, limit: int = 100) -> list[str]:
        rows = await self.pool.fetch(
            f"SELECT id FROM executions WHERE state IN {NOT_TERMINAL}"
            " AND deadline_at < now() ORDER BY deadline_at LIMIT $1",
            limit,
        )
        return [r["id"] for r in rows]

    async def fail_past_deadline(self, execution_id: str) -> tuple[Fenced, Placement] | None:
        """Fails an execution past its overall deadline, wherever it is: waiting, backing
        off, or running (its attempt ends with it). Returns the attempt that was running and
        where, so the caller can stop it."""
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                f"SELECT * FROM executions WHERE id = $1 AND state IN {NOT_TERMINAL}"
                " AND deadline_at < now() FOR UPDATE",
                execution_id,
            )
            if row is None:
                return None
            record = ExecutionRecord.from_row(row)
            error = DeadlineExceeded(
                "the execution did not end before its deadline", reason="EXECUTION_TIMEOUT"
            ).to_status()
            placement = None
            if record.state.active:
                placement = await self._placement(conn, record)
                await self._end_attempt(conn, record, "FAILED", error)
            await self._fail(conn, record, error)
            if placement is None:
                return None
            return Fenced(record.id, record.attempt), placement

    async def expired_waits(self, limit: int = 100) -> list[str]:
        rows = await self.pool.fetch(
            f"SELECT id FROM executions WHERE state IN {WAITING}"
            " AND queued_since + make_interval(secs => queue_timeout_s) < now() LIMIT $1",
            limit,
        )
        return [r["id"] for r in rows]

    async def fail_expired_wait(self, execution_id: str) -> bool:
        """Fails an execution that waited in the queue longer than its queue timeout."""
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                f"SELECT * FROM executions WHERE id = $1 AND state IN {WAITING}"
                " AND queued_since + make_interval(secs => queue_timeout_s) < now() FOR UPDATE",
                execution_id,
            )
            if row is None:
                return False
            record = ExecutionRecord.from_row(row)
            error = DeadlineExceeded(
                f"no executor started the execution within its queue timeout of "
                f"{record.queue_timeout_s:g}s",
                reason="QUEUE_TIMEOUT",
            ).to_status()
            await self._fail(conn, record, error)
            return True

    async def active_on(self, executor_ids: Sequence[str]) -> list[Fenced]:
        """The current attempts that run on the given executors."""
        rows = await self.pool.fetch(
            f"SELECT a.execution_id, a.number FROM attempts a JOIN executions e"
            f" ON e.id = a.execution_id AND e.attempt = a.number"
            f" WHERE a.executor_id = ANY($1) AND a.state IN {ACTIVE} AND e.state IN {ACTIVE}",
            list(executor_ids),
        )
        return [Fenced(r["execution_id"], r["number"]) for r in rows]

    # ---- helpers ---------------------------------------------------------------------------

    @staticmethod
    async def _lock_fenced(
        conn: asyncpg.Connection, fence: Fenced, require: str = "true"
    ) -> ExecutionRecord | None:
        """The execution, locked, when ``fence`` is its current attempt; None otherwise."""
        row = await conn.fetchrow(
            f"SELECT * FROM executions WHERE id = $1 AND ({require}) FOR UPDATE",
            fence.execution_id,
        )
        if row is None:
            return None
        record = ExecutionRecord.from_row(row)
        if not accepts_update(record.state, record.attempt, fence.attempt):
            return None
        return record

    @staticmethod
    async def _update(
        conn: asyncpg.Connection, execution_id: str, assignments: str, *args: object
    ) -> ExecutionRecord:
        """Applies ``assignments`` and takes the next event sequence number in one statement."""
        row = await conn.fetchrow(
            f"UPDATE executions SET {assignments}, last_sequence = last_sequence + 1,"
            " updated_at = now() WHERE id = $1 RETURNING *",
            execution_id,
            *args,
        )
        return ExecutionRecord.from_row(row)

    async def _end_attempt(
        self,
        conn: asyncpg.Connection,
        record: ExecutionRecord,
        state: str,
        error: status_pb2.Status | None,
    ) -> None:
        """Ends the current attempt and charges its GPU time: to the attempt, the
        execution's total and the tenant's spending this month."""
        row = await conn.fetchrow(
            "UPDATE attempts SET state = $3, ended_at = now(), error = $4"
            " WHERE execution_id = $1 AND number = $2"
            " RETURNING provider, gpu_name, extract(epoch FROM now() - started_at) AS ran_s",
            record.id,
            record.attempt,
            state,
            error.SerializeToString() if error is not None else None,
        )
        if row is None:
            return
        cost = self._cost(row["provider"], row["gpu_name"], row["ran_s"])
        if cost > 0:
            await conn.execute(_CHARGE, record.id, record.attempt, cost, record.tenant)

    def _cost(
        self, provider: str | None, gpu_name: str | None, ran_s: Decimal | float | None
    ) -> float:
        """What an attempt that ran ``ran_s`` seconds costs; an attempt that never started
        (``ran_s`` None) ran nothing and costs nothing."""
        if provider is None or ran_s is None:
            return 0.0
        return self.prices.cost_usd(provider, gpu_name or "", float(ran_s))

    @staticmethod
    async def _placement(conn: asyncpg.Connection, record: ExecutionRecord) -> Placement | None:
        return await _placement_of(conn, Fenced(record.id, record.attempt))

    async def placement(self, fence: Fenced) -> Placement | None:
        """Where attempt ``fence`` was dispatched."""
        async with self.pool.acquire() as conn:
            return await _placement_of(conn, fence)


async def _placement_of(conn: asyncpg.Connection, fence: Fenced) -> Placement | None:
    row = await conn.fetchrow(
        "SELECT executor_id, executor_address, provider, transport, gpu_name FROM attempts"
        " WHERE execution_id = $1 AND number = $2",
        fence.execution_id,
        fence.attempt,
    )
    if row is None:
        return None
    return Placement(
        row["executor_id"],
        row["executor_address"],
        row["provider"],
        row["transport"],
        row["gpu_name"],
    )
