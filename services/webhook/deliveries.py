"""Deliveries: made from events, read back with their attempts, and sent again on request."""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

import asyncpg

from comfyfleet.common.errors import FailedPrecondition, FieldViolation, InvalidArgument, NotFound
from comfyfleet.common.ids import new_id
from comfyfleet.common.telemetry import current_traceparent
from comfyfleet.common.timeutil import utcnow
from services.webhook.filters import SUBSCRIPTION_DISABLED, TEST_EVENT, matches
from services.webhook.paging import Page
from services.webhook.payload import Event, service_event

log = logging.getLogger(__name__)

STATES = ("pending", "succeeded", "failed")


@dataclass(frozen=True)
class Delivery:
    id: str
    subscription_id: str
    event_id: str
    event_type: str
    state: str
    attempts: int
    last_status_code: int
    last_error: str
    next_attempt_time: datetime | None
    create_time: datetime
    payload: str


@dataclass(frozen=True)
class Attempt:
    number: int
    attempt_time: datetime
    status_code: int
    latency_s: float
    response_excerpt: str
    error: str


_DELIVERY_COLUMNS = (
    "id, subscription_id, event_id, event_type, state, attempts, last_status_code,"
    " last_error, next_attempt_time, create_time, payload"
)


def _delivery(row: asyncpg.Record) -> Delivery:
    return Delivery(**{k: row[k] for k in Delivery.__dataclass_fields__})


@dataclass(frozen=True)
class Claim:
    """A delivery handed to one worker for one attempt."""

    id: str
    subscription_id: str
    url: str
    secrets: tuple[str, ...]
    payload: str
    # The attempt's number in the delivery's log, and in the current retry round.
    number: int
    round_attempts: int
    # The value of the delivery's lease counter this claim holds.
    lease: int
    # The trace the delivery belongs to (W3C traceparent); "" when untraced.
    traceparent: str = ""


class Slots(Protocol):
    """Room for attempts in this process, which new deliveries may take as they are made,
    skipping the queue (and a claim query) on their way out."""

    def reserve(self, subscription_id: str, failing: bool) -> bool: ...

    def release(self, subscription_id: str) -> None: ...


@dataclass(frozen=True)
class FanOut:
    added: int
    # Deliveries added already claimed for the reserved slots, to start now.
    claims: list[Claim]


# The enabled subscriptions of some tenants, with what an attempt needs.
_MATCHING = """
SELECT s.id, s.tenant, s.event_types, s.url, s.failing_since IS NOT NULL AS failing,
    ARRAY(SELECT k.secret FROM subscription_secrets k
          WHERE k.subscription_id = s.id AND (k.expire_time IS NULL OR k.expire_time > now())
          ORDER BY k.create_time DESC) AS secrets
FROM subscriptions s WHERE s.enabled AND s.tenant = ANY($1::text[])
"""

# Rows for reserved slots are stored claimed (first attempt, lease 1, due when the lease
# ends), so no other worker takes them; the rest wait in the queue, due now.
_INSERT = """
INSERT INTO deliveries (id, subscription_id, tenant, event_id, event_type, payload, state,
                        attempts, round_attempts, lease, next_attempt_time, traceparent)
SELECT u.id, u.subscription_id, u.tenant, u.event_id, u.event_type, u.payload, 'pending',
       u.taken::int, u.taken::int, u.taken::int,
       CASE WHEN u.taken THEN now() + make_interval(secs => $9) ELSE now() END, u.traceparent
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::bool[],
            $8::text[])
     AS u (id, subscription_id, tenant, event_id, event_type, payload, taken, traceparent)
ON CONFLICT (event_id, subscription_id) DO NOTHING
RETURNING id
"""


async def fan_out(
    conn: asyncpg.Connection,
    events: Sequence[Event],
    slots: Slots | None = None,
    lease_s: float = 0.0,
) -> FanOut:
    """Adds one delivery per event and enabled matching subscription of its tenant (the
    subscription's filter and the event's own ``allowed`` types both choose it); those
    that get a slot come back as claims for it (held for ``lease_s``).

    Idempotent: an event already turned into deliveries adds nothing (and its slots are
    released). The insert is one statement: a subscription deleted since it was read fails
    it whole (its foreign key), and the caller tries again.
    """
    subs = await conn.fetch(_MATCHING, sorted({e.tenant for e in events}))
    by_tenant: dict[str, list[asyncpg.Record]] = defaultdict(list)
    for sub in subs:
        by_tenant[sub["tenant"]].append(sub)
    planned = [
        (new_id("msg"), sub, e, slots is not None and slots.reserve(sub["id"], sub["failing"]))
        for e in {e.event_id: e for e in events}.values()
        for sub in by_tenant[e.tenant]
        if matches(sub["event_types"], e.event_type) and matches(e.allowed, e.event_type)
    ]
    rows = [
        (i, sub["id"], e.tenant, e.event_id, e.event_type, e.body, t, e.traceparent)
        for i, sub, e, t in planned
    ]
    try:
        added = await _insert(conn, rows, lease_s)
    finally:
        if slots is not None:
            for i, sub, _, taken in planned:
                if taken and i not in added:
                    slots.release(sub["id"])
    claims = [
        Claim(i, sub["id"], sub["url"], tuple(sub["secrets"]), e.body, 1, 1, 1, e.traceparent)
        for i, sub, e, taken in planned
        if taken and i in added
    ]
    return FanOut(len(added), claims)


async def _insert(
    conn: asyncpg.Connection, rows: Sequence[tuple[object, ...]], lease_s: float = 0.0
) -> set[str]:
    """Inserts (id, subscription, tenant, event id, type, body, claimed, traceparent) rows;
    returns the ids added."""
    if not rows:
        return set()
    columns = [list(column) for column in zip(*rows, strict=True)]
    return {r["id"] for r in await conn.fetch(_INSERT, *columns, lease_s)}


async def disable_subscription(
    conn: asyncpg.Connection, subscription_id: str, reason: str, *, announce: bool
) -> bool:
    """Turns a subscription off and fails its pending deliveries; with ``announce``, tells
    the tenant's other subscriptions by a ``webhook.subscription_disabled`` event.

    ``reason`` is empty when the owner disabled it. Returns False if it already was off.
    """
    row = await conn.fetchrow(
        "UPDATE subscriptions SET enabled = false, disabled_reason = $2, failing_since = NULL,"
        " update_time = now() WHERE id = $1 AND enabled RETURNING tenant, url, now() AS now",
        subscription_id,
        reason,
    )
    if row is None:
        return False
    await conn.execute(
        "UPDATE deliveries SET state = 'failed', next_attempt_time = NULL, last_error = $2,"
        " lease = lease + 1, update_time = now() WHERE subscription_id = $1 AND state = 'pending'",
        subscription_id,
        f"the subscription was disabled: {reason or 'by its owner'}",
    )
    if announce:
        log.warning("disabled subscription %s: %s", subscription_id, reason)
        data = {"subscriptionId": subscription_id, "url": row["url"], "reason": reason}
        event = service_event(new_id("evt"), row["tenant"], SUBSCRIPTION_DISABLED, row["now"], data)
        await fan_out(conn, [event])
    return True


def _state_filter(state: str | None) -> str | None:
    if state is not None and state not in STATES:
        raise InvalidArgument("unknown state", [FieldViolation("state", f"one of {STATES}")])
    return state


class Deliveries:
    """Reading and replaying a tenant's deliveries."""

    def __init__(self, pool: asyncpg.Pool, on_due: Callable[[], None] = lambda: None) -> None:
        self._pool = pool
        # Wakes the workers of this process, so what was made due now goes out at once.
        self._on_due = on_due

    async def _subscription(self, conn: asyncpg.Connection, tenant: str, sub_id: str) -> bool:
        """Whether the tenant's subscription is enabled; NOT_FOUND when it has none such."""
        enabled = await conn.fetchval(
            "SELECT enabled FROM subscriptions WHERE id = $1 AND tenant = $2", sub_id, tenant
        )
        if enabled is None:
            raise NotFound(f"subscription {sub_id!r} not found", metadata={"id": sub_id})
        return bool(enabled)

    async def list_page(
        self,
        tenant: str,
        subscription_id: str,
        *,
        page_size: int,
        page_token: str,
        state: str | None = None,
        event_id: str = "",
    ) -> tuple[list[Delivery], str]:
        """One page of a subscription's deliveries, newest first, optionally filtered."""
        scope = f"deliveries:{tenant}:{subscription_id}:{state}:{event_id}"
        page = Page.of(page_size, page_token, scope)
        async with self._pool.acquire() as conn:
            await self._subscription(conn, tenant, subscription_id)
            rows = await conn.fetch(
                f"SELECT {_DELIVERY_COLUMNS} FROM deliveries WHERE subscription_id = $1"
                " AND ($2::text IS NULL OR id < $2) AND ($3::text IS NULL OR state = $3)"
                " AND ($4 = '' OR event_id = $4) ORDER BY id DESC LIMIT $5",
                subscription_id,
                page.after,
                _state_filter(state),
                event_id,
                page.size + 1,
            )
        return [_delivery(r) for r in rows[: page.size]], page.next_token([r["id"] for r in rows])

    async def get(self, tenant: str, subscription_id: str, delivery_id: str) -> Delivery:
        row = await self._pool.fetchrow(
            f"SELECT {_DELIVERY_COLUMNS} FROM deliveries"
            " WHERE id = $1 AND subscription_id = $2 AND tenant = $3",
            delivery_id,
            subscription_id,
            tenant,
        )
        if row is None:
            raise NotFound(f"delivery {delivery_id!r} not found", metadata={"id": delivery_id})
        return _delivery(row)

    async def attempts(
        self, tenant: str, subscription_id: str, delivery_id: str, page_size: int, page_token: str
    ) -> tuple[list[Attempt], str]:
        """One page of a delivery's attempts, oldest first."""
        await self.get(tenant, subscription_id, delivery_id)
        page = Page.of(page_size, page_token, f"attempts:{tenant}:{delivery_id}")
        rows = await self._pool.fetch(
            "SELECT number, attempt_time, status_code, latency_ms, response_excerpt, error"
            " FROM delivery_attempts WHERE delivery_id = $1 AND number > $2"
            " ORDER BY number LIMIT $3",
            delivery_id,
            _attempt_number(page.after),
            page.size + 1,
        )
        attempts = [
            Attempt(
                number=r["number"],
                attempt_time=r["attempt_time"],
                status_code=r["status_code"],
                latency_s=r["latency_ms"] / 1000.0,
                response_excerpt=r["response_excerpt"],
                error=r["error"],
            )
            for r in rows[: page.size]
        ]
        return attempts, page.next_token([str(r["number"]) for r in rows])

    async def redeliver(self, tenant: str, subscription_id: str, delivery_id: str) -> Delivery:
        """Makes a delivery pending and due now, with a fresh retry schedule and the same id.

        Bumping the lease means an attempt still in flight can no longer overwrite it.
        """
        async with self._pool.acquire() as conn, conn.transaction():
            if not await self._subscription(conn, tenant, subscription_id):
                raise _disabled(subscription_id)
            row = await conn.fetchrow(
                "UPDATE deliveries SET state = 'pending', next_attempt_time = now(),"
                " round_attempts = 0, lease = lease + 1, update_time = now()"
                f" WHERE id = $1 AND subscription_id = $2 RETURNING {_DELIVERY_COLUMNS}",
                delivery_id,
                subscription_id,
            )
        if row is None:
            raise NotFound(f"delivery {delivery_id!r} not found", metadata={"id": delivery_id})
        self._on_due()
        return _delivery(row)

    async def recover(self, tenant: str, subscription_id: str, since: datetime) -> int:
        """Redelivers every failed delivery of the subscription created at or after ``since``."""
        async with self._pool.acquire() as conn, conn.transaction():
            if not await self._subscription(conn, tenant, subscription_id):
                raise _disabled(subscription_id)
            status = await conn.execute(
                "UPDATE deliveries SET state = 'pending', next_attempt_time = now(),"
                " round_attempts = 0, lease = lease + 1, update_time = now()"
                " WHERE subscription_id = $1 AND state = 'failed' AND create_time >= $2",
                subscription_id,
                since,
            )
        self._on_due()
        return int(status.rsplit(" ", 1)[-1])

    async def ping(self, tenant: str, subscription_id: str) -> Delivery:
        """Queues a ``webhook.test`` event for this subscription alone."""
        now = utcnow()
        event = service_event(
            new_id("evt"), tenant, TEST_EVENT, now, {"subscriptionId": subscription_id}
        )
        row = (
            new_id("msg"),
            subscription_id,
            tenant,
            event.event_id,
            TEST_EVENT,
            event.body,
            False,
            current_traceparent(),  # the ping's delivery joins the trace of the call
        )
        async with self._pool.acquire() as conn, conn.transaction():
            if not await self._subscription(conn, tenant, subscription_id):
                raise _disabled(subscription_id)
            await _insert(conn, [row])
        self._on_due()
        return await self.get(tenant, subscription_id, row[0])


def _attempt_number(after: str | None) -> int:
    if after is None:
        return 0
    if not after.isdigit():
        raise InvalidArgument(
            "page_token is not one this list returned",
            [FieldViolation("page_token", "use the next_page_token of the same list")],
        )
    return int(after)


def _disabled(subscription_id: str) -> FailedPrecondition:
    return FailedPrecondition(
        f"subscription {subscription_id!r} is disabled; enable it first",
        reason="SUBSCRIPTION_DISABLED",
        metadata={"id": subscription_id},
    )
