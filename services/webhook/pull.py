"""A continuous pull from a durable JetStream pull consumer.

``PullSubscription.fetch`` asks for messages and waits for the answer, so at low rates every
event costs a request round trip, and a batch fetch waits out its expiry for the batch to
fill. Here pull requests for a batch stay outstanding and are topped up as messages arrive
(the pattern of nats.go's ``Consume``): an event streams in as soon as JetStream stores it,
and a backlog comes in batches. It stays a pull consumer (explicit acks, AckWait,
MaxDeliver, MaxAckPending bound how much is in hand).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable

from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js.api import DEFAULT_PREFIX, Header, StatusCode

log = logging.getLogger(__name__)

# The status that ends a pull request (expired, or cut short) says how many of its messages
# never came, so the count outstanding stays right.
_PENDING_HEADER = "Nats-Pending-Messages"
_ENDED = {StatusCode.REQUEST_TIMEOUT.value, StatusCode.CONFLICT.value}


class ContinuousPull:
    def __init__(
        self,
        nc: NatsClient,
        stream: str,
        consumer: str,
        *,
        batch: int,
        expires_s: float,
        deliver: Callable[[Msg], None],
    ) -> None:
        self._nc = nc
        self._subject = f"{DEFAULT_PREFIX}.CONSUMER.MSG.NEXT.{stream}.{consumer}"
        self._batch = batch
        self._expires_s = expires_s
        self._deliver = deliver
        self._inbox = nc.new_inbox()
        self._sub: Subscription | None = None
        self._outstanding = 0
        self._last_heard = time.monotonic()
        self._watchdog: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._sub = await self._nc.subscribe(self._inbox, cb=self._on_message)
        self._watchdog = asyncio.create_task(self._watch(), name="webhook-pull-watchdog")
        await self._top_up()

    async def stop(self) -> None:
        """Stops taking messages; those already sent to us and not delivered come back
        after AckWait."""
        if self._watchdog is not None:
            self._watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watchdog
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()

    async def _on_message(self, msg: Msg) -> None:
        self._last_heard = time.monotonic()
        status = msg.headers.get(Header.STATUS) if msg.headers else None
        if status is None:
            self._outstanding -= 1
            self._deliver(msg)
        elif status in _ENDED and msg.headers and _PENDING_HEADER in msg.headers:
            self._outstanding -= int(msg.headers[_PENDING_HEADER] or 0)
        elif status != StatusCode.CONTROL_MESSAGE.value:
            # Refused outright (the consumer is gone, a limit was hit): asking again at
            # once would only be refused again, so the watchdog asks later.
            log.warning("pull request refused: %s %s", status, msg.headers)
            self._outstanding = 0
            return
        await self._top_up()

    async def _top_up(self) -> None:
        """Asks for more once half the messages asked for have come."""
        if self._outstanding > self._batch // 2:
            return
        want = self._batch - max(self._outstanding, 0)
        request = {"batch": want, "expires": int(self._expires_s * 1e9)}
        self._outstanding = self._batch
        await self._nc.publish(self._subject, json.dumps(request).encode(), reply=self._inbox)

    async def _watch(self) -> None:
        """Asks again after a refusal, or when nothing was heard for longer than a request
        lives: its end was lost (a reconnect, a restarted server), and so would be every
        event after it."""
        while True:
            await asyncio.sleep(self._expires_s)
            silent = time.monotonic() - self._last_heard > 2 * self._expires_s
            if silent or self._outstanding <= 0:
                self._outstanding = 0
                self._last_heard = time.monotonic()
                try:
                    await self._top_up()
                except Exception as err:
                    log.warning("asking for events failed: %r", err)
