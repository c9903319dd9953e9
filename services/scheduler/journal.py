"""Writing an execution event, its outbox entry and a wake-up notice in the caller's transaction."""

from __future__ import annotations

from collections.abc import Callable
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

    async def notify(self, conn: asyncpg.Connection, key: str) -> None:
        """Wakes listeners about something that is not an event, such as a new executor."""
        await conn.execute("SELECT pg_notify($1, $2)", self.channel, key)
