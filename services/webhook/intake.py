"""The durable JetStream consumer that turns execution events into deliveries.

Each fetched batch becomes deliveries in one transaction and is acked only after it
commits; a crash in between makes JetStream hand the events out again, and the unique
(event, subscription) key makes the second pass add nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Protocol

import asyncpg
import nats.errors
from google.protobuf.message import DecodeError
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from comfyfleet.common.events import EventBus, decode_event
from comfyfleet.common.timeutil import utcnow
from services.webhook.config import ConsumerSettings
from services.webhook.deliveries import Claim, Slots, fan_out
from services.webhook.payload import Event, execution_event

log = logging.getLogger(__name__)

# Transactions storing deliveries at once.
HANDLERS = 4
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
    return execution_event(event, utcnow())


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
        """Consumes until exit; on exit stops fetching and stores what was fetched."""
        sub = await self._subscribe()
        # None follows the last message fetched, once fetching has stopped.
        fetched: asyncio.Queue[Msg | None] = asyncio.Queue()
        fetcher = asyncio.create_task(self._fetch_loop(sub, fetched), name="webhook-fetch")
        # Several batches are stored at once, so one slow transaction holds up no others.
        handlers = [
            asyncio.create_task(self._handle_loop(fetched), name=f"webhook-intake-{i}")
            for i in range(HANDLERS)
        ]
        try:
            yield self
        finally:
            self._stop.set()
            limit = self._settings.fetch_timeout_s + 5.0
            try:
                await asyncio.wait_for(fetcher, timeout=limit)
                for _ in handlers:
                    fetched.put_nowait(None)
                await asyncio.wait_for(asyncio.gather(*handlers), timeout=limit)
            except TimeoutError:
                log.warning("intake did not stop in time; its unacked events will come back")
                for task in handlers:
                    task.cancel()
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def _subscribe(self) -> JetStreamContext.PullSubscription:
        config = consumer_config(self._bus, self._settings)
        # Creates the consumer, or brings an existing one up to this configuration.
        await self._bus.js.add_consumer(self._bus.cfg.stream, config=config)
        return await self._bus.js.pull_subscribe_bind(
            durable=self._settings.durable_name, stream=self._bus.cfg.stream
        )

    async def _fetch_loop(
        self, sub: JetStreamContext.PullSubscription, fetched: asyncio.Queue[Msg | None]
    ) -> None:
        """Fetches ahead of the handler, so the next events are in hand while a batch is
        stored; how far ahead is bounded by the consumer's MaxAckPending."""
        backlog = 0
        while not self._stop.is_set():
            msgs = await self._fetch(sub, backlog)
            if msgs:
                backlog = _pending_after(msgs[-1])
            for msg in msgs:
                fetched.put_nowait(msg)

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

    async def _fetch(self, sub: JetStreamContext.PullSubscription, backlog: int) -> list[Msg]:
        """The next events: a batch when a backlog is known, else the first to arrive.

        A batch fetch on an idle stream waits out its whole timeout for the batch to fill,
        so it is only used when the last event said more were waiting.
        """
        batch = min(backlog, self._settings.fetch_batch) if backlog else 1
        try:
            return await sub.fetch(batch, timeout=self._settings.fetch_timeout_s)
        except (TimeoutError, nats.errors.TimeoutError):
            return []
        except nats.errors.Error as err:
            log.warning("fetching events failed: %s", err)
            await self._pause(1.0)
            return []

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


def _pending_after(msg: Msg) -> int:
    try:
        return int(msg.metadata.num_pending)
    except (ValueError, TypeError, AttributeError):
        return 0


def _delivered_count(msg: Msg) -> int:
    try:
        return max(1, int(msg.metadata.num_delivered))
    except (ValueError, TypeError, AttributeError):
        return 1
