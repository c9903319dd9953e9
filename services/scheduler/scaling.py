"""Applying autoscaling: every round, one replica (whichever takes the round's lock) reads
the queue and the providers, asks ``autoscale.plan`` for each provider's replicas, sets them
through the provider's API, and records every change it decided."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

import asyncpg

from services.scheduler.autoscale import Decision, ProviderView, ScalePolicy, ScaleState, plan
from services.scheduler.breaker import Breakers, BreakerState, Scope
from services.scheduler.cost import PriceTable
from services.scheduler.notify import wait_any
from services.scheduler.queue import ProviderLoad, Queue

log = logging.getLogger(__name__)


class Scaler(Protocol):
    """A provider whose replicas the scheduler can set, running one environment."""

    provider: str
    environment: str

    async def replicas(self) -> int | None:
        """The replicas the provider has now; None when it cannot say."""
        ...

    async def apply(self, desired: int) -> str | None:
        """Sets the replicas; None when the provider took it, else why it did not."""
        ...


@dataclass(frozen=True)
class DecisionRecord:
    provider: str
    current: int
    desired: int
    reason: str
    applied: bool
    note: str
    queue_depth: int
    oldest_wait_s: float
    utilization: float
    decided_at: datetime


def _epoch(value: datetime | None) -> float | None:
    return value.timestamp() if value is not None else None


def _moment(value: float | None) -> datetime | None:
    return datetime.fromtimestamp(value, UTC) if value is not None else None


class Autoscaler:
    def __init__(
        self,
        pool: asyncpg.Pool,
        queue: Queue,
        breakers: Breakers,
        prices: PriceTable,
        scalers: Sequence[Scaler],
        policies: Mapping[str, ScalePolicy],
        *,
        schema: str,
        interval_s: float,
        executor_lapse_s: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.pool = pool
        self.queue = queue
        self.breakers = breakers
        self.prices = prices
        self.scalers = list(scalers)
        self.policies = dict(policies)
        self.lock_key = f"{schema}:autoscale"
        self.interval_s = interval_s
        self.executor_lapse_s = executor_lapse_s
        self.clock = clock

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.round()
            except Exception:
                log.exception("autoscaling round failed")
            await wait_any([stop], self.interval_s)

    async def round(self) -> list[DecisionRecord]:
        """One round; nothing when another replica holds this round's lock."""
        if not self.scalers:
            return []
        async with self.pool.acquire() as conn, conn.transaction():
            locked = await conn.fetchval(
                "SELECT pg_try_advisory_xact_lock(hashtext($1))", self.lock_key
            )
            if not locked:
                return []
            return await self._round(conn)

    async def _round(self, conn: asyncpg.Connection) -> list[DecisionRecord]:
        stats = await self.queue.stats(self.executor_lapse_s)
        states = await self._states(conn)
        now = datetime.fromtimestamp(self.clock(), UTC)
        records = []
        # Each environment's queue is served by its own providers only: they scale on it.
        for env in sorted({s.environment for s in self.scalers}):
            load = stats.environment(env)
            scalers = [s for s in self.scalers if s.environment == env]
            views = [await self._view(s, load.provider(s.provider), states) for s in scalers]
            decisions = plan(views, load.depth, load.oldest_wait_s, now.timestamp())
            for view, scaler in zip(views, scalers, strict=True):
                decision = decisions[view.name]
                await self._save_state(conn, view.name, decision.state)
                if decision.desired != view.replicas:
                    record = await self._apply(
                        scaler, view, decision, (load.depth, load.oldest_wait_s), now
                    )
                    await self._record(conn, record)
                    records.append(record)
        # Kept for a month: enough to see how the fleet followed its load.
        await conn.execute(
            "DELETE FROM scaling_decisions WHERE decided_at < now() - interval '30 days'"
        )
        return records

    async def _view(
        self, scaler: Scaler, load: ProviderLoad | None, states: Mapping[str, ScaleState]
    ) -> ProviderView:
        name = scaler.provider
        registered = load.executors if load else 0
        replicas = await scaler.replicas()
        return ProviderView(
            name=name,
            price=self.prices.reference(name),
            healthy=self.breakers.state_of(Scope.PROVIDER, name) is not BreakerState.OPEN,
            replicas=registered if replicas is None else replicas,
            busy=load.busy_slots if load else 0,
            policy=self.policies[name],
            state=states.get(name, ScaleState()),
        )

    async def _apply(
        self,
        scaler: Scaler,
        view: ProviderView,
        decision: Decision,
        queue: tuple[int, float],
        now: datetime,
    ) -> DecisionRecord:
        note = await scaler.apply(decision.desired)
        level = logging.INFO if note is None else logging.WARNING
        log.log(
            level,
            "autoscaling %s: %d -> %d (%s)%s",
            view.name,
            view.replicas,
            decision.desired,
            decision.reason,
            f"; {note}" if note else "",
        )
        return DecisionRecord(
            provider=view.name,
            current=view.replicas,
            desired=decision.desired,
            reason=decision.reason,
            applied=note is None,
            note=note or "",
            queue_depth=queue[0],
            oldest_wait_s=queue[1],
            utilization=min(1.0, view.busy / view.replicas) if view.replicas else 0.0,
            decided_at=now,
        )

    @staticmethod
    async def _states(conn: asyncpg.Connection) -> dict[str, ScaleState]:
        rows = await conn.fetch("SELECT * FROM scaling_state")
        return {
            r["provider"]: ScaleState(
                _epoch(r["last_up_at"]), _epoch(r["last_down_at"]), _epoch(r["last_active_at"])
            )
            for r in rows
        }

    @staticmethod
    async def _save_state(conn: asyncpg.Connection, provider: str, state: ScaleState) -> None:
        await conn.execute(
            "INSERT INTO scaling_state (provider, last_up_at, last_down_at, last_active_at)"
            " VALUES ($1, $2, $3, $4) ON CONFLICT (provider) DO UPDATE SET last_up_at = $2,"
            " last_down_at = $3, last_active_at = $4",
            provider,
            _moment(state.last_up_at),
            _moment(state.last_down_at),
            _moment(state.last_active_at),
        )

    @staticmethod
    async def _record(conn: asyncpg.Connection, r: DecisionRecord) -> None:
        await conn.execute(
            "INSERT INTO scaling_decisions (provider, current_replicas, desired_replicas, reason,"
            " applied, note, queue_depth, oldest_wait_s, utilization, decided_at)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            r.provider,
            r.current,
            r.desired,
            r.reason,
            r.applied,
            r.note,
            r.queue_depth,
            r.oldest_wait_s,
            r.utilization,
            r.decided_at,
        )


async def recent_decisions(pool: asyncpg.Pool, provider: str, limit: int) -> list[DecisionRecord]:
    rows = await pool.fetch(
        "SELECT * FROM scaling_decisions WHERE ($1 = '' OR provider = $1)"
        " ORDER BY id DESC LIMIT $2",
        provider,
        limit,
    )
    return [
        DecisionRecord(
            provider=r["provider"],
            current=r["current_replicas"],
            desired=r["desired_replicas"],
            reason=r["reason"],
            applied=r["applied"],
            note=r["note"],
            queue_depth=r["queue_depth"],
            oldest_wait_s=r["oldest_wait_s"],
            utilization=r["utilization"],
            decided_at=r["decided_at"],
        )
        for r in rows
    ]
