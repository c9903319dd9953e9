"""Delivery workers: claim due deliveries, POST them concurrently, record the results.

One claim loop hands each claimed delivery to its own task, up to ``max_in_flight`` tasks
and ``per_subscription_concurrency`` per subscription (far fewer for a subscription whose
last attempt failed), so a receiver that hangs or fails ties up only a small share.
Results go to a writer that stores them in batches.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime

import asyncpg
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from comfyfleet.common import metrics
from comfyfleet.common.telemetry import span_in
from services.webhook.config import DeliverySettings
from services.webhook.deliveries import Claim
from services.webhook.queue import Completed, DeliveryQueue
from services.webhook.retry import AttemptResult, Outcome, RetryPolicy, Verdict
from services.webhook.sender import Sender

log = logging.getLogger(__name__)

# Deliveries claimed per query: large enough to keep up with bursts, small enough that a
# claim never holds rows long.
CLAIM_BATCH = 128
# Results stored per transaction at most, and how long the first of a batch waits for more.
WRITE_BATCH = 512
WRITE_LINGER_S = 0.05
# Pause after a database error before trying again, growing to the maximum.
DB_RETRY_S = (0.1, 0.5, 1.0, 2.0, 5.0)
DB_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError)


class ResultWriter:
    """Stores finished attempts in batches; keeps them and retries while the database fails."""

    def __init__(self, queue: DeliveryQueue) -> None:
        self._queue = queue
        self._pending: asyncio.Queue[Completed] = asyncio.Queue()
        self._stopping = asyncio.Event()

    def submit(self, completed: Completed) -> None:
        self._pending.put_nowait(completed)

    async def run(self) -> None:
        while True:
            batch = [await self._pending.get()]
            # Results wait a moment for company: a transaction per handful of attempts, not
            # per attempt, costs the database far less, and no delivery waits for it.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=WRITE_LINGER_S)
            while len(batch) < WRITE_BATCH and not self._pending.empty():
                batch.append(self._pending.get_nowait())
            await self._write(batch)
            for _ in batch:
                self._pending.task_done()

    async def _write(self, batch: list[Completed]) -> None:
        for failures in itertools.count():
            try:
                disabled = await self._queue.complete(batch)
            except Exception as err:
                # Kept in memory and tried again: until stored, the attempts' deliveries
                # stay claimed, and a stop or crash only means they are sent once more.
                pause = DB_RETRY_S[min(failures, len(DB_RETRY_S) - 1)]
                log.warning("storing %d results failed (%r); again in %gs", len(batch), err, pause)
                await asyncio.sleep(pause)
                continue
            for sub in disabled:
                log.warning("subscription %s disabled", sub)
            return

    async def flush(self) -> None:
        """Returns once everything submitted so far is stored; stops lingering."""
        self._stopping.set()
        await self._pending.join()


class Dispatcher:
    def __init__(
        self,
        queue: DeliveryQueue,
        sender: Sender,
        settings: DeliverySettings,
        *,
        rng: random.Random | None = None,
    ) -> None:
        self._queue = queue
        self._sender = sender
        self._settings = settings
        self._policy = RetryPolicy(
            settings.retry_schedule_s, settings.retry_jitter, settings.max_retry_after_s
        )
        self._rng = rng or random.Random()
        self._writer = ResultWriter(queue)
        self._wake = asyncio.Event()
        self._stopping = False
        self._busy: Counter[str] = Counter()
        self._tasks: dict[asyncio.Task[None], Claim] = {}
        # Slots new deliveries took on their way in, until they are handed over.
        self._reserved = 0
        self._refill_at = max(1, min(CLAIM_BATCH, settings.max_in_flight) // 8)
        # Whether deliveries may be waiting in the queue: while not, finished attempts do
        # not send the claim loop looking (new deliveries mostly skip the queue).
        self._maybe_due = True
        self._wakes = 0

    def wake(self) -> None:
        """Look for due deliveries now: some were added, or made due, or will be soon."""
        self._maybe_due = True
        self._wakes += 1
        self._wake.set()

    def _room(self) -> int:
        return self._settings.max_in_flight - len(self._tasks) - self._reserved

    def reserve(self, subscription_id: str, failing: bool) -> bool:
        """Takes a slot for a new delivery of this subscription, if one is free."""
        settings = self._settings
        limit = (
            settings.failing_subscription_concurrency
            if failing
            else settings.per_subscription_concurrency
        )
        if self._stopping or self._room() <= 0 or self._busy[subscription_id] >= limit:
            return False
        self._busy[subscription_id] += 1
        self._reserved += 1
        return True

    def release(self, subscription_id: str) -> None:
        """Gives back a slot whose delivery was not made after all."""
        self._reserved -= 1
        self._unbusy(subscription_id)

    def hand_over(self, claims: Sequence[Claim]) -> None:
        """Starts attempts for new deliveries stored claimed in reserved slots."""
        for claim in claims:
            self._reserved -= 1
            self._run(claim)

    @asynccontextmanager
    async def running(self, grace_s: float) -> AsyncIterator[Dispatcher]:
        """Runs the workers; on exit stops claiming and lets attempts finish within grace."""
        writer = asyncio.create_task(self._writer.run(), name="webhook-result-writer")
        claimer = asyncio.create_task(self._claim_loop(), name="webhook-claimer")
        try:
            yield self
        finally:
            self._stopping = True
            self.wake()
            await claimer
            await self._finish_in_flight(grace_s)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._writer.flush(), timeout=max(grace_s, 1.0))
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer
            await self._queue.close()

    async def _claim_loop(self) -> None:
        failures = 0
        while not self._stopping:
            self._wake.clear()
            try:
                full = await self._claim_some()
                failures = 0
            except Exception as err:
                # The database is away (or a bug): keep trying, more slowly, never die.
                log.warning("claiming deliveries failed: %r", err)
                failures += 1
                full = False
            if full:
                continue
            pause = DB_RETRY_S[min(failures, len(DB_RETRY_S)) - 1] if failures else None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self._wake.wait(), timeout=pause or self._settings.poll_interval_s
                )

    async def _claim_some(self) -> bool:
        """Claims as many due deliveries as there is room for; True if there may be more."""
        room = min(self._room(), CLAIM_BATCH)
        if room <= 0:
            return False
        wakes = self._wakes
        claims = await self._queue.claim(
            room,
            dict(self._busy),
            self._settings.per_subscription_concurrency,
            self._settings.failing_subscription_concurrency,
            self._settings.claim_lease_s,
        )
        for claim in claims:
            self._start(claim)
        limit = self._settings.per_subscription_concurrency
        if claims:
            self._maybe_due = True  # there may be more behind them
        elif wakes == self._wakes and all(n < limit for n in self._busy.values()):
            # Nothing due, no subscription held back by its limit, and nothing was added
            # while the claim ran (it could not have seen that).
            self._maybe_due = False
        return len(claims) == room

    def _start(self, claim: Claim) -> None:
        self._busy[claim.subscription_id] += 1
        self._run(claim)

    def _run(self, claim: Claim) -> None:
        task = asyncio.create_task(self._attempt(claim), name=f"webhook-attempt-{claim.id}")
        self._tasks[task] = claim
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        claim = self._tasks.pop(task)
        busy = self._unbusy(claim.subscription_id)
        if not task.cancelled() and task.exception() is not None:
            log.error("attempt of %s crashed", claim.id, exc_info=task.exception())
        # A claim is a query: come back for more once there is room for a worthwhile batch,
        # for this subscription and overall, not after every single attempt.
        half = self._settings.per_subscription_concurrency // 2
        if self._maybe_due and busy <= half and self._room() >= self._refill_at:
            self._wake.set()

    def _unbusy(self, subscription_id: str) -> int:
        """One attempt fewer for the subscription; returns how many it still has."""
        self._busy[subscription_id] -= 1
        busy = self._busy[subscription_id]
        if busy <= 0:
            del self._busy[subscription_id]
        return busy

    async def _attempt(self, claim: Claim) -> None:
        started = datetime.now(UTC)
        with span_in(claim.traceparent, "webhook deliver", kind=SpanKind.CLIENT) as span:
            result = await self._sender.post(
                claim.url, claim.id, claim.payload.encode(), claim.secrets
            )
            outcome = self._policy.judge(result, claim.round_attempts, self._rng)
            _report(span, claim, result, outcome)
        if outcome.verdict is Verdict.RETRY and outcome.delay_s < self._settings.poll_interval_s:
            # Sooner than the next poll: come back for it on time.
            asyncio.get_running_loop().call_later(outcome.delay_s, self.wake)
        self._writer.submit(Completed(claim, result, outcome, started))

    async def _finish_in_flight(self, grace_s: float) -> None:
        """Waits for attempts in flight; those still running after grace are cancelled and
        their deliveries handed back for another worker (or the next start) to send."""
        if not self._tasks:
            return
        _, late = await asyncio.wait(set(self._tasks), timeout=grace_s)
        if not late:
            return
        cut = [self._tasks[t] for t in late]
        for task in late:
            task.cancel()
        await asyncio.gather(*late, return_exceptions=True)
        log.warning("stopped with %d attempts unfinished; handing them back", len(cut))
        with contextlib.suppress(*DB_ERRORS):
            await self._queue.release(cut)


def _report(span: Span, claim: Claim, result: AttemptResult, outcome: Outcome) -> None:
    """One attempt's answer, on its span and in the delivery metrics."""
    span.set_attributes(
        {
            "comfyfleet.delivery_id": claim.id,
            "comfyfleet.subscription_id": claim.subscription_id,
            "comfyfleet.delivery_attempt": claim.number,
            "comfyfleet.delivery_outcome": outcome.verdict.value,
            "http.response.status_code": result.status_code,
        }
    )
    if outcome.verdict is not Verdict.SUCCEEDED:
        span.set_status(Status(StatusCode.ERROR, result.error or f"HTTP {result.status_code}"))
    metrics.webhook_attempt(outcome.verdict.value, result.latency_s)
