"""PostgreSQL LISTEN/NOTIFY as wake-up calls: for watchers of one execution, and for loops
that care about any change (the dispatcher and the outbox relay).

Notices are hints, never the truth: every waiter re-reads the database and also polls, so a
lost notice (or a lost listening connection) only costs latency.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg

log = logging.getLogger(__name__)


class Notifier:
    def __init__(self, channel: str) -> None:
        self.channel = channel
        self._any: set[asyncio.Event] = set()
        self._by_key: dict[str, set[asyncio.Event]] = {}

    @contextlib.contextmanager
    def watch(self, key: str | None = None) -> Iterator[asyncio.Event]:
        """An event set on every notice about ``key`` (any notice when None)."""
        event = asyncio.Event()
        group = self._any if key is None else self._by_key.setdefault(key, set())
        group.add(event)
        try:
            yield event
        finally:
            group.discard(event)
            if key is not None and not group:
                self._by_key.pop(key, None)

    def wake(self, key: str | None) -> None:
        """Sets the events of ``key``'s watchers and of every catch-all watcher; None wakes
        everyone (after a reconnect, when notices may have been missed)."""
        targets = list(self._any)
        if key is None:
            for group in self._by_key.values():
                targets.extend(group)
        else:
            targets.extend(self._by_key.get(key, ()))
        for event in targets:
            event.set()

    def _on_notice(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        self.wake(payload)

    @asynccontextmanager
    async def listening(self, dsn: str, *, retry_s: float = 1.0) -> AsyncIterator[Notifier]:
        """Keeps a LISTEN connection open (reconnecting when it drops) while in the block."""
        task = asyncio.create_task(self._listen_forever(dsn, retry_s), name="notifier")
        try:
            yield self
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _listen_forever(self, dsn: str, retry_s: float) -> None:
        while True:
            try:
                await self._listen_once(dsn)
            except Exception as err:  # any lost connection: waiters poll meanwhile
                log.warning("LISTEN %s lost (%s); reconnecting", self.channel, err)
            await asyncio.sleep(retry_s)

    async def _listen_once(self, dsn: str) -> None:
        conn = await asyncpg.connect(dsn)
        lost = asyncio.Event()
        conn.add_termination_listener(lambda _conn: lost.set())
        try:
            await conn.add_listener(self.channel, self._on_notice)
            self.wake(None)  # notices sent while nobody listened are gone: look again
            await lost.wait()
        finally:
            await conn.close()


async def wait_any(events: list[asyncio.Event], wait_s: float) -> None:
    """Returns once any of ``events`` is set or ``wait_s`` has passed; clears nothing."""
    if any(e.is_set() for e in events):
        return
    waiters = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waiters, timeout=wait_s, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
