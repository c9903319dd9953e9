"""Writing an execution event, its outbox entry and a wake-up notice in the caller's transaction."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC

import asyncpg

from comfyfleet.executions.v1 import executions_pb2

# The notice that tells dispatchers to look at the queue again: something joined it, or a
# slot or a tenant's share was freed.
DISPATCH_KEY = "dispatch"
_DISPATCH_EVENTS = frozenset(
    {
        "execution.queued",
        "execution.retrying",
        "execution.succeeded",
        "execution.failed",
        "execution.cancelled",
    }
)

_APPEND = """
WITH event AS (
    INSERT INTO events (execution_id, sequence, event_id, event_type, created_at, payload)
    VALUES ($1, $2, $3, $4, $5, $6)
), outbox AS (
    INSERT INTO outbox (event_id, subject, payload, traceparent)
    VALUES ($3, $7, $6, coalesce((SELECT traceparent FROM executions WHERE id = $1), ''))
)
SELECT pg_notify($8, $1), (SELECT pg_notify($8, $9) WHERE $9 <> '')
"""

# The same for several executions' events in one statement: outbox ids follow the order given.
_APPEND_MANY = """
WITH e AS (
    SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::timestamptz[],
                         $6::bytea[], $7::text[])
        WITH ORDINALITY AS e(execution_id, sequence, event_id, event_type, created_at, payload,
                             subject, ord)
), event AS (
    INSERT INTO events (execution_id, sequence, event_id, event_type, created_at, payload)
    SELECT execution_id, sequence, event_id, event_type, created_at, payload FROM e
), outbox AS (
    INSERT INTO outbox (event_id, subject, payload, traceparent)
    SELECT e.event_id, e.subject, e.payload, coalesce(x.traceparent, '')
    FROM e LEFT JOIN executions x ON x.id = e.execution_id
    ORDER BY e.ord
)
SELECT count(pg_notify($8, execution_id)) FROM (SELECT DISTINCT execution_id FROM e) n
UNION ALL SELECT count(pg_notify($8, $9)) WHERE $9 <> ''
"""


@dataclass(frozen=True)
class Journal:
    """Where events go: the history a watcher replays, and the outbox the relay publishes.

    Both rows join the transaction that made the change, so an event exists exactly when its
    change does; the NOTIFY (delivered on commit) wakes watchers, the relay and dispatchers.
    """

    subject: Callable[[str, str], str]
    channel: str

    async def append(
        self, conn: asyncpg.Connection, event: executions_pb2.WorkflowExecutionEvent
    ) -> None:
        await conn.execute(
            _APPEND,
            event.execution_id,
            event.sequence,
            event.event_id,
            event.event_type,
            event.timestamp.ToDatetime(tzinfo=UTC),
            event.SerializeToString(),
            self.subject(event.tenant, event.execution_id),
            self.channel,
            DISPATCH_KEY if event.event_type in _DISPATCH_EVENTS else "",
        )

    async def append_many(
        self, conn: asyncpg.Connection, events: Sequence[executions_pb2.WorkflowExecutionEvent]
    ) -> None:
        """``append`` for many events in one round trip; events of one execution must come
        in sequence order (the relay publishes in the order given)."""
        if not events:
            return
        wakes = any(e.event_type in _DISPATCH_EVENTS for e in events)
        await conn.fetch(
            _APPEND_MANY,
            [e.execution_id for e in events],
            [e.sequence for e in events],
            [e.event_id for e in events],
            [e.event_type for e in events],
            [e.timestamp.ToDatetime(tzinfo=UTC) for e in events],
            [e.SerializeToString() for e in events],
            [self.subject(e.tenant, e.execution_id) for e in events],
            self.channel,
            DISPATCH_KEY if wakes else "",
        )

    async def notify(self, conn: asyncpg.Connection, key: str) -> None:
        """Wakes listeners about something that is not an event, such as a new executor."""
        await conn.execute("SELECT pg_notify($1, $2)", self.channel, key)
