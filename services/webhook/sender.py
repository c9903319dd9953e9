"""One signed POST to a receiver, turned into an :class:`AttemptResult` whatever happens."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime

import aiohttp

from comfyfleet.common.addresses import AddressPolicy
from services.webhook.retry import AttemptResult, parse_retry_after
from services.webhook.signing import request_headers

# Enough of a response to tell a receiver's error page apart; more only fills the log.
EXCERPT_BYTES = 1024


def _excerpt(raw: bytes) -> str:
    # PostgreSQL text cannot hold NUL; a binary answer is shown as replacement characters.
    return raw.decode("utf-8", "replace").replace("\x00", "\ufffd")


def _describe(err: BaseException) -> str:
    if isinstance(err, asyncio.TimeoutError):
        return "timed out"
    return f"{type(err).__name__}: {err}"[:EXCERPT_BYTES]


class Sender:
    """POSTs deliveries over one shared connection pool, through the address guard."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self._session = session

    @classmethod
    @asynccontextmanager
    async def open(
        cls, policy: AddressPolicy, *, timeout_s: float, max_connections: int
    ) -> AsyncIterator[Sender]:
        connector = aiohttp.TCPConnector(
            limit=max_connections,
            socket_factory=policy.socket_factory,
            # The system resolver in a thread: the c-ares one keeps busy threads of its own.
            resolver=aiohttp.ThreadedResolver(),
            # Receivers' DNS answers may change; the guard re-checks every connection anyway.
            ttl_dns_cache=60,
        )
        session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=timeout_s),
            # No proxies from the environment: the guard must see the real destination.
            trust_env=False,
            auto_decompress=False,
        )
        async with session:
            yield cls(session)

    async def post(
        self, url: str, msg_id: str, body: bytes, secrets: Sequence[str]
    ) -> AttemptResult:
        """One attempt: never raises for what the receiver or the network does."""
        timestamp = int(time.time())
        headers = request_headers(secrets, msg_id, timestamp, body)
        started = time.monotonic()
        try:
            async with self._session.post(
                url, data=body, headers=headers, allow_redirects=False
            ) as resp:
                raw = await resp.content.read(EXCERPT_BYTES)
                return AttemptResult(
                    status_code=resp.status,
                    latency_s=time.monotonic() - started,
                    response_excerpt=_excerpt(raw),
                    retry_after_s=parse_retry_after(
                        resp.headers.get("retry-after"), datetime.now(UTC)
                    ),
                )
        except (TimeoutError, aiohttp.ClientError, OSError, ValueError) as err:
            return AttemptResult(
                status_code=0, latency_s=time.monotonic() - started, error=_describe(err)
            )
