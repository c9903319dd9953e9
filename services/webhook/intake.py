"""The durable JetStream consumer that turns execution events into deliveries.

Each batch of events becomes deliveries in one statement and is acked only after it
commits; a crash in between makes JetStream hand the events out again, and the unique
(event, subscription) key makes the second pass add nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Protocol

import asyncpg
from google.protobuf.message import DecodeError
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from comfyfleet.common.events import EventBus, decode_event
from comfyfleet.common.telemetry import traceparent_of
from comfyfleet.common.timeutil import utcnow
from services.webhook.config import ConsumerSettings
from services.webhook.deliveries import Claim, Slots, fan_out
from services.webhook.payload import Event, execution_event
from services.webhook.pull import ContinuousPull

log = logging.getLogger(__name__)

# Transactions storing deliveries at once.
HANDLERS = 4
# How long a stop waits for the batches in hand to be stored.
STOP_WAIT_S = 10.0
# Redelivery pauses asked for when the database could not take a batch.
NAK_DELAY_S = (1.0, 2.0, 5.0, 10.0, 30.0)


def consumer_config(bus: EventBus, settings: ConsumerSettings) -> ConsumerConfig:
    return ConsumerConfig(
        durable_name=settings.durable_name,
        name=settings.durable_name,
        deliver_policy=DeliverPolicy.ALL,
        ack_policy=AckPolicy.EXPLICIT,
        ack_wait=settings.ack_wait_s,
        max_deliver=settings.max_deliver,
        filter_subject=bus.all_subjects(),
        max_ack_pending=max(settings.fetch_batch * 4, 1024),
    )


def _decode(msg: Msg) -> Event | None:
    """The event in a message, or None when it is not a usable execution event."""
    try:
        event = decode_event(msg.data)
    except DecodeError:
        return None
    if not (event.event_id and event.tenant and event.event_type):
        return None
    return replace(execution_event(event, utcnow()), traceparent=traceparent_of(msg.headers))


class Workers(Slots, Protocol):
    """The delivery workers of this process, as the intake sees them."""

    def hand_over(self, claims: Sequence[Claim]) -> None: ...

    def wake(self) -> None: ...


class Intake:
    def __init__(
        self,
        bus: EventBus,
        pool: asyncpg.Pool,
        settings: ConsumerSettings,
        workers: Workers,
        *,
        lease_s: float,
    ) -> None:
        self._bus = bus
        self._pool = pool
        self._settings = settings
        self._workers = workers
        self._lease_s = lease_s
        self._stop = asyncio.Event()

    @asynccontextmanager
    async def running(self) -> AsyncIterator[Intake]:
        """Consumes until exit; on exit stops taking events and stores those in hand."""
        # None follows the last message taken, once taking has stopped.
        taken: asyncio.Queue[Msg | None] = asyncio.Queue()
        await self._ensure_consumer()
        pull = ContinuousPull(
            self._bus.nc,
            self._bus.cfg.stream,
            self._settings.durable_name,
            batch=self._settings.fetch_batch,
            expires_s=self._settings.pull_expires_s,
            deliver=taken.put_nowait,
        )
        # Several batches are stored at once, so one slow transaction holds up no others.
        handlers = [
            asyncio.create_task(self._handle_loop(taken), name=f"webhook-intake-{i}")
            for i in range(HANDLERS)
        ]
        await pull.start()
        try:
            yield self
        finally:
            self._stop.set()
            await pull.stop()
            for _ in handlers:
                taken.put_nowait(None)
            try:
                await asyncio.wait_for(asyncio.gather(*handlers), timeout=STOP_WAIT_S)
            except TimeoutError:
                log.warning("intake did not stop in time; its unacked events will come back")
                for task in handlers:
                    task.cancel()

    async def _ensure_consumer(self) -> None:
        """Creates the consumer, or brings an existing one up to this configuration."""
        config = consumer_config(self._bus, self._settings)
        await self._bus.js.add_consumer(self._bus.cfg.stream, config=config)

    async def _handle_loop(self, fetched: asyncio.Queue[Msg | None]) -> None:
        """Stores everything fetched so far as one batch, again and again: batches grow with
        the load, and one transaction serves many events."""
        while True:
            first = await fetched.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < self._settings.fetch_batch and not fetched.empty():
                msg = fetched.get_nowait()
                if msg is None:  # the end is for another handler: put it back
                    fetched.put_nowait(None)
                    break
                batch.append(msg)
            await self._handle(batch)

    async def _handle(self, msgs: Sequence[Msg]) -> None:
        usable: list[tuple[Msg, Event]] = []
        for msg in msgs:
            event = _decode(msg)
            if event is None:
                log.error("dropping a message on %s that is no execution event", msg.subject)
                await msg.term()
            else:
                usable.append((msg, event))
        if not usable:
            return
        try:
            async with self._pool.acquire() as conn:
                made = await fan_out(conn, [e for _, e in usable], self._workers, self._lease_s)
        except Exception as err:
            # The database is away (or a bug): the events come back later; never die.
            await self._retry_later([m for m, _ in usable], err)
            return
        for msg, _ in usable:
            await msg.ack()
        # Deliveries with a free worker go out now; the others wait for a claim.
        self._workers.hand_over(made.claims)
        if made.added > len(made.claims):
            self._workers.wake()

    async def _retry_later(self, msgs: Sequence[Msg], err: BaseException) -> None:
        log.warning("storing deliveries for %d events failed: %r", len(msgs), err)
        for msg in msgs:
            delivered = _delivered_count(msg)
            await msg.nak(delay=NAK_DELAY_S[min(delivered, len(NAK_DELAY_S)) - 1])
        await self._pause(NAK_DELAY_S[0])

    async def _pause(self, seconds: float) -> None:
        """Waits, but no longer than until a stop."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), timeout=seconds)


def _delivered_count(msg: Msg) -> int:
    try:
        return max(1, int(msg.metadata.num_delivered))
    except (ValueError, TypeError, AttributeError):
        return 1
