"""The delivery queue in PostgreSQL: claiming due deliveries and recording what attempts got.

A claim pushes the delivery's next attempt time out by a lease and bumps its ``lease``
counter; a worker that dies mid-attempt thus hands the delivery back when the lease runs
out, and a result only lands while the counter still matches (a redelivery or a newer
claim wins). Results are written in batches: one transaction for many attempts.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg

from services.webhook.deliveries import Claim, disable_subscription
from services.webhook.retry import AttemptResult, Outcome, Verdict

GONE_REASON = "the receiver answered 410 Gone"


@dataclass(frozen=True)
class Completed:
    """An attempt that is over, with what it got and what follows from it."""

    claim: Claim
    result: AttemptResult
    outcome: Outcome
    attempt_time: datetime

    @property
    def ok(self) -> bool:
        return self.outcome.verdict is Verdict.SUCCEEDED

    def state(self) -> str:
        return {Verdict.SUCCEEDED: "succeeded", Verdict.RETRY: "pending"}.get(
            self.outcome.verdict, "failed"
        )

    def next_attempt_time(self) -> datetime | None:
        if self.outcome.verdict is not Verdict.RETRY:
            return None
        finished = self.attempt_time + timedelta(seconds=self.result.latency_s)
        return finished + timedelta(seconds=self.outcome.delay_s)

    def error(self) -> str:
        if self.ok:
            return ""
        return self.result.error or f"the receiver answered {self.result.status_code}"


# Due deliveries of enabled subscriptions, at most `per_subscription` ($3; $6 for one whose
# last attempt failed) less what this process already has in flight from any one
# subscription, so a backlog for one receiver cannot take every worker. Each subscription
# gives its earliest due rows from the (subscription, due time) index: the cost follows the
# number of subscriptions, not the size of a backlog. (The rows are read from the table, not
# only the index, so index entries of rows long done get marked dead on the way and later
# claims skip them.) Rows another worker is claiming right now are skipped, not waited for.
# Picked rows are looked up by id through `= ANY(ARRAY(...))`, which stays an index lookup
# in the cached plan however small the table was when it was planned.
_CLAIM = """
WITH picked AS (
    SELECT due.id, due.next_attempt_time
    FROM subscriptions s
    LEFT JOIN unnest($1::text[], $2::int[]) AS busy (subscription_id, n)
           ON busy.subscription_id = s.id
    CROSS JOIN LATERAL (
        SELECT d.id, d.next_attempt_time FROM deliveries d
        WHERE d.subscription_id = s.id AND d.state = 'pending'
          AND d.next_attempt_time <= now()
        ORDER BY d.next_attempt_time
        LIMIT greatest(CASE WHEN s.failing_since IS NULL THEN $3::int ELSE $6::int END
                       - coalesce(busy.n, 0), 0)
    ) due
    WHERE s.enabled
    ORDER BY due.next_attempt_time LIMIT $4
), locked AS (
    SELECT d.id FROM deliveries d
    WHERE d.id = ANY(ARRAY(SELECT id FROM picked))
      AND d.state = 'pending' AND d.next_attempt_time <= now()
    FOR UPDATE SKIP LOCKED
)
UPDATE deliveries d
SET attempts = d.attempts + 1, round_attempts = d.round_attempts + 1, lease = d.lease + 1,
    next_attempt_time = now() + make_interval(secs => $5), update_time = now()
FROM subscriptions s
WHERE d.id = ANY(ARRAY(SELECT id FROM locked)) AND s.id = d.subscription_id
RETURNING d.id, d.subscription_id, s.url, d.payload, d.attempts, d.round_attempts, d.lease,
    d.traceparent,
    ARRAY(SELECT k.secret FROM subscription_secrets k
          WHERE k.subscription_id = d.subscription_id
            AND (k.expire_time IS NULL OR k.expire_time > now())
          ORDER BY k.create_time DESC) AS secrets
"""

_LOG_ATTEMPTS = """
INSERT INTO delivery_attempts
    (delivery_id, number, attempt_time, status_code, latency_ms, response_excerpt, error)
SELECT u.* FROM unnest($1::text[], $2::int[], $3::timestamptz[], $4::int[], $5::float8[],
                       $6::text[], $7::text[]) AS u (id, number, t, code, latency, excerpt, error)
WHERE EXISTS (SELECT 1 FROM deliveries d WHERE d.id = u.id)
ON CONFLICT DO NOTHING
"""

# A retry for a subscription disabled meanwhile becomes a failure: it would never be claimed.
_RECORD = """
UPDATE deliveries d
SET state = CASE WHEN u.state = 'pending' AND NOT s.enabled THEN 'failed' ELSE u.state END,
    next_attempt_time = CASE WHEN s.enabled THEN u.next ELSE NULL END,
    last_status_code = u.code, last_error = u.error, update_time = now()
FROM unnest($1::text[], $2::bigint[], $3::text[], $4::timestamptz[], $5::int[], $6::text[])
         AS u (id, lease, state, next, code, error),
     subscriptions s
WHERE d.id = u.id AND d.lease = u.lease AND s.id = d.subscription_id
"""

# Health per subscription from its latest result: a success clears `failing_since`, a
# failure starts it (only rows whose health changes are written).
_HEALTH = """
UPDATE subscriptions s
SET failing_since = CASE WHEN u.ok THEN NULL ELSE u.t END
FROM unnest($1::text[], $2::bool[], $3::timestamptz[]) AS u (id, ok, t)
WHERE s.id = u.id AND s.enabled AND u.ok = (s.failing_since IS NOT NULL)
"""

_FAILING_TOO_LONG = """
SELECT id FROM subscriptions
WHERE id = ANY($1::text[]) AND enabled AND failing_since <= now() - make_interval(secs => $2)
ORDER BY id
"""


def _column(rows: Sequence[tuple[object, ...]], i: int) -> list[object]:
    return [r[i] for r in rows]


class DeliveryQueue:
    def __init__(self, pool: asyncpg.Pool, *, disable_after_s: float) -> None:
        self._pool = pool
        self._disable_after_s = disable_after_s
        self._claimer: asyncpg.Connection | None = None

    async def _claim_connection(self) -> asyncpg.Connection:
        """The connection claims use, held between claims (one round trip per claim).

        Its commits do not wait for the disk: a claim lost in a database crash only means
        its deliveries are due again, and are sent again under the same webhook-id, while
        waiting would put a flush on the path from every event to its delivery.
        """
        if self._claimer is None:
            conn = await self._pool.acquire()
            await conn.execute("SET synchronous_commit TO off")
            self._claimer = conn
        return self._claimer

    async def close(self) -> None:
        """Gives the claim connection back to the pool (which resets its settings)."""
        conn, self._claimer = self._claimer, None
        if conn is None:
            return
        try:
            await self._pool.release(conn)
        except Exception:
            # Lost already (the pool lets go of connections that die): nothing to give back.
            with contextlib.suppress(Exception):
                conn.terminate()

    async def claim(
        self,
        limit: int,
        busy: Mapping[str, int],
        per_subscription: int,
        per_failing_subscription: int,
        lease_s: float,
    ) -> list[Claim]:
        """Up to ``limit`` due deliveries, each now this caller's for ``lease_s``; with
        ``busy`` attempts already in flight per subscription."""
        conn = await self._claim_connection()
        try:
            rows = await conn.fetch(
                _CLAIM,
                list(busy),
                list(busy.values()),
                per_subscription,
                limit,
                lease_s,
                per_failing_subscription,
            )
        except Exception:
            # The connection may be broken (a restarted or terminated backend): the next
            # claim takes a fresh one.
            await self.close()
            raise
        return [
            Claim(
                id=r["id"],
                subscription_id=r["subscription_id"],
                url=r["url"],
                secrets=tuple(r["secrets"]),
                payload=r["payload"],
                number=r["attempts"],
                round_attempts=r["round_attempts"],
                lease=r["lease"],
                traceparent=r["traceparent"],
            )
            for r in rows
        ]

    async def release(self, claims: Sequence[Claim]) -> None:
        """Makes claims that were never attempted due again at once (a stop cut them off)."""
        await self._pool.execute(
            "UPDATE deliveries d SET next_attempt_time = now(), update_time = now()"
            " FROM unnest($1::text[], $2::bigint[]) AS u (id, lease)"
            " WHERE d.id = u.id AND d.lease = u.lease AND d.state = 'pending'",
            [c.id for c in claims],
            [c.lease for c in claims],
        )

    async def complete(self, batch: Sequence[Completed]) -> list[str]:
        """Logs the attempts, moves their deliveries on, updates subscription health and
        disables the subscriptions that answered 410 or failed for too long, all in one
        transaction. Returns the subscriptions disabled."""
        async with self._pool.acquire() as conn, conn.transaction():
            # Subscriptions before deliveries, the order every other writer locks them in
            # (a delete cascades from one to the other); otherwise the two deadlock.
            await conn.execute(
                "SELECT 1 FROM subscriptions WHERE id = ANY($1::text[]) ORDER BY id"
                " FOR NO KEY UPDATE",
                sorted({c.claim.subscription_id for c in batch}),
            )
            await self._log(conn, batch)
            await self._record(conn, batch)
            failing = await self._health(conn, batch)
            gone = {c.claim.subscription_id for c in batch if c.outcome.verdict is Verdict.GONE}
            disabled = [s for s in sorted(gone) if await self._disable(conn, s, GONE_REASON)]
            too_long = f"deliveries kept failing for {self._disable_after_s:g} s"
            for sub in failing:
                if sub not in gone and await self._disable(conn, sub, too_long):
                    disabled.append(sub)
        return disabled

    async def _disable(self, conn: asyncpg.Connection, subscription_id: str, why: str) -> bool:
        return await disable_subscription(conn, subscription_id, why, announce=True)

    async def _log(self, conn: asyncpg.Connection, batch: Sequence[Completed]) -> None:
        rows = [
            (
                c.claim.id,
                c.claim.number,
                c.attempt_time,
                c.result.status_code,
                c.result.latency_s * 1000.0,
                c.result.response_excerpt,
                c.result.error,
            )
            for c in batch
        ]
        await conn.execute(_LOG_ATTEMPTS, *(_column(rows, i) for i in range(7)))

    async def _record(self, conn: asyncpg.Connection, batch: Sequence[Completed]) -> None:
        rows = [
            (
                c.claim.id,
                c.claim.lease,
                c.state(),
                c.next_attempt_time(),
                c.result.status_code,
                c.error(),
            )
            for c in batch
        ]
        await conn.execute(_RECORD, *(_column(rows, i) for i in range(6)))

    async def _health(self, conn: asyncpg.Connection, batch: Sequence[Completed]) -> list[str]:
        latest: dict[str, Completed] = {}
        for c in sorted(batch, key=lambda c: c.attempt_time):
            latest[c.claim.subscription_id] = c
        ids = list(latest)
        oks = [latest[s].ok for s in ids]
        times = [latest[s].attempt_time for s in ids]
        await conn.execute(_HEALTH, ids, oks, times)
        failing = [s for s in ids if not latest[s].ok]
        if not failing:
            return []
        rows = await conn.fetch(_FAILING_TOO_LONG, failing, self._disable_after_s)
        return [r["id"] for r in rows]
