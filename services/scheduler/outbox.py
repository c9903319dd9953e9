"""The outbox relay: publishes committed events to JetStream in order, then marks them sent.

A crash between publishing and marking re-sends the event on the next round; JetStream drops
the copy by its Nats-Msg-Id (the event id). While NATS is down the rows simply wait.

A batch goes out in waves without waiting for each ack in turn: a wave holds at most one event
per execution (its oldest unsent one), all published at once; the next wave goes once every
ack of this one is in. An execution's events thus reach the stream in sequence order, and
after a failure nothing of that execution's is sent past the event that failed.
"""

from __future__ import annotations

import asyncio
import logging
import time

import asyncpg

from comfyfleet.common.events import EventBus, decode_event
from comfyfleet.executions.v1 import executions_pb2
from services.scheduler.notify import Notifier, wait_any

log = logging.getLogger(__name__)


class OutboxRelay:
    def __init__(
        self,
        pool: asyncpg.Pool,
        bus: EventBus,
        notifier: Notifier,
        *,
        schema: str,
        poll_s: float = 1.0,
        batch: int = 200,
        max_backoff_s: float = 5.0,
        retention_s: float = 3600.0,
    ) -> None:
        self.pool = pool
        self.bus = bus
        self.notifier = notifier
        self.lock_key = f"{schema}:outbox"
        self.poll_s = poll_s
        self.batch = batch
        self.max_backoff_s = max_backoff_s
        # Published rows are kept well past JetStream's duplicate window, then dropped: the
        # events table keeps the history.
        self.retention_s = retention_s
        self._pruned_at = 0.0

    async def run(self, stop: asyncio.Event) -> None:
        """Relays until ``stop`` is set, then once more so that nothing committed is left."""
        failures = 0
        with self.notifier.watch() as changed:
            while not stop.is_set():
                try:
                    sent = await self.relay_once()
                    await self._prune_now_and_then()
                    failures = 0
                except Exception as err:
                    failures += 1
                    delay = min(self.max_backoff_s, self.poll_s * 2 ** min(failures, 6))
                    log.warning("outbox relay failed (%s); retrying in %.1fs", err, delay)
                    await wait_any([stop], delay)
                    continue
                if sent < self.batch:
                    await wait_any([changed, stop], self.poll_s)
                    changed.clear()
        await self.flush()

    async def _prune_now_and_then(self) -> None:
        now = time.monotonic()
        if now - self._pruned_at < min(self.retention_s, 60.0):
            return
        self._pruned_at = now
        await self.prune()

    async def prune(self) -> int:
        """Deletes rows published longer than the retention ago; returns how many."""
        status = await self.pool.execute(
            "DELETE FROM outbox WHERE published_at < now() - make_interval(secs => $1)",
            self.retention_s,
        )
        return int(status.split()[-1])

    async def flush(self) -> None:
        """Publishes what is pending now; a failure leaves it to the next relay."""
        try:
            while await self.relay_once() == self.batch:
                pass
        except Exception as err:
            log.warning("final outbox flush failed (%s); another replica or restart sends it", err)

    async def relay_once(self) -> int:
        """Publishes one batch in outbox order; returns how many were published.

        One relay at a time across replicas (a transaction-scoped advisory lock), so events of
        one execution reach the stream in sequence order.
        """
        error: Exception | None = None
        async with self.pool.acquire() as conn, conn.transaction():
            locked = await conn.fetchval(
                "SELECT pg_try_advisory_xact_lock(hashtext($1))", self.lock_key
            )
            if not locked:
                return 0
            rows = await conn.fetch(
                "SELECT id, payload, traceparent FROM outbox"
                " WHERE published_at IS NULL ORDER BY id LIMIT $1",
                self.batch,
            )
            pending = [
                (row["id"], decode_event(row["payload"]), row["traceparent"]) for row in rows
            ]
            sent: list[int] = []
            while pending and error is None:
                wave, pending = _wave(pending)
                results = await asyncio.gather(
                    *(self.bus.publish(event, traceparent=trace) for _, event, trace in wave),
                    return_exceptions=True,
                )
                for (row_id, _event, _trace), result in zip(wave, results, strict=True):
                    if isinstance(result, BaseException):
                        error = error or _exception(result)
                    else:
                        sent.append(row_id)
            # Only rows whose publish JetStream acknowledged.
            await conn.execute("UPDATE outbox SET published_at = now() WHERE id = ANY($1)", sent)
        if error is not None:
            raise error
        return len(sent)


_Row = tuple[int, executions_pb2.WorkflowExecutionEvent, str]


def _wave(pending: list[_Row]) -> tuple[list[_Row], list[_Row]]:
    """The oldest pending event of each execution, and the rest (in outbox order)."""
    wave: list[_Row] = []
    rest: list[_Row] = []
    seen: set[str] = set()
    for row in pending:
        execution_id = row[1].execution_id
        (rest if execution_id in seen else wave).append(row)
        seen.add(execution_id)
    return wave, rest


def _exception(result: BaseException) -> Exception:
    if isinstance(result, Exception):
        return result
    raise result  # cancellation and the like are not publish failures
