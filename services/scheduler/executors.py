"""The registry of executors that registered over gRPC and keep heartbeating."""

from __future__ import annotations

import asyncio
import logging

import asyncpg

from comfyfleet.common.errors import FieldViolation, InvalidArgument
from comfyfleet.scheduler.v1 import scheduler_pb2
from services.scheduler.journal import DISPATCH_KEY, Journal
from services.scheduler.notify import wait_any
from services.scheduler.records import ExecutorRecord

log = logging.getLogger(__name__)

PROVIDERS = ("local", "ecs", "runpod")

_UPSERT = """
INSERT INTO executors (id, address, provider, engine, node_types, slots, busy_slots, gpu_name,
    gpu_total_memory_bytes, gpu_free_memory_bytes, cached_models, transport, registered_at,
    last_seen)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, now(), now())
ON CONFLICT (id) DO UPDATE SET address = $2, provider = $3, engine = $4, node_types = $5,
    slots = $6, busy_slots = $7, gpu_name = $8, gpu_total_memory_bytes = $9,
    gpu_free_memory_bytes = $10, cached_models = $11, transport = $12, registered_at = now(),
    last_seen = now()
"""

_HEARTBEAT = """
UPDATE executors SET last_seen = now(), slots = $2, busy_slots = $3, gpu_name = $4,
    gpu_total_memory_bytes = $5, gpu_free_memory_bytes = $6, cached_models = $7
WHERE id = $1
"""


def check_registration(executor: scheduler_pb2.Executor) -> None:
    violations = []
    if not executor.id:
        violations.append(FieldViolation("executor.id", "an executor id is required"))
    if not executor.address:
        violations.append(FieldViolation("executor.address", "the executor's address is required"))
    if executor.provider and executor.provider not in PROVIDERS:
        violations.append(FieldViolation("executor.provider", f"one of {', '.join(PROVIDERS)}"))
    if executor.capacity.slots < 0 or executor.capacity.busy_slots < 0:
        violations.append(FieldViolation("executor.capacity", "slot counts cannot be negative"))
    if violations:
        raise InvalidArgument("the executor registration is invalid", violations)


def _capacity(capacity: scheduler_pb2.ExecutorCapacity) -> tuple[object, ...]:
    # An executor that reports no slot count runs one workflow at a time.
    return (
        capacity.slots or 1,
        capacity.busy_slots,
        capacity.gpu.name,
        capacity.gpu.total_memory_bytes,
        capacity.gpu.free_memory_bytes,
        list(capacity.cached_models),
    )


class ExecutorRegistry:
    def __init__(self, pool: asyncpg.Pool, journal: Journal) -> None:
        self.pool = pool
        self.journal = journal

    async def register(self, executor: scheduler_pb2.Executor, transport: str = "grpc") -> None:
        """Adds or refreshes an executor and wakes the dispatchers: it has free slots.
        Executors that register over the API are reached over gRPC; the scheduler registers
        the RunPod endpoints it is configured with itself."""
        check_registration(executor)
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                _UPSERT,
                executor.id,
                executor.address,
                executor.provider or "local",
                executor.engine or "native",
                sorted(set(executor.node_types)),
                *_capacity(executor.capacity),
                transport,
            )
            await self.journal.notify(conn, DISPATCH_KEY)

    async def heartbeat(
        self, executor_id: str, capacity: scheduler_pb2.ExecutorCapacity | None
    ) -> bool:
        """Renews a registration, with the capacity when the heartbeat reports one; False when
        the scheduler does not know the executor (never registered, deregistered, or dropped
        after its heartbeats lapsed)."""
        if capacity is None:
            status = await self.pool.execute(
                "UPDATE executors SET last_seen = now() WHERE id = $1", executor_id
            )
        else:
            status = await self.pool.execute(_HEARTBEAT, executor_id, *_capacity(capacity))
        return status != "UPDATE 0"

    async def deregister(self, executor_id: str) -> None:
        """Removes an executor: nothing new is dispatched to it; attempts it still runs finish
        over their streams, or their leases run out."""
        await self.pool.execute("DELETE FROM executors WHERE id = $1", executor_id)

    async def live(self, lapse_s: float) -> list[ExecutorRecord]:
        rows = await self.pool.fetch(
            "SELECT * FROM executors WHERE last_seen > now() - make_interval(secs => $1)"
            " ORDER BY id",
            lapse_s,
        )
        return [ExecutorRecord.from_row(r) for r in rows]

    async def drop_lapsed(self, lapse_s: float) -> list[str]:
        """Forgets executors whose heartbeats stopped; returns their ids."""
        rows = await self.pool.fetch(
            "DELETE FROM executors WHERE last_seen <= now() - make_interval(secs => $1)"
            " RETURNING id",
            lapse_s,
        )
        return [r["id"] for r in rows]

    async def forget(self, executor_id: str, address: str) -> None:
        """Drops an executor the scheduler could not reach, unless it re-registered elsewhere
        meanwhile; its next heartbeat is told to register again."""
        await self.pool.execute(
            "DELETE FROM executors WHERE id = $1 AND address = $2", executor_id, address
        )


async def keep_registered(
    registry: ExecutorRegistry,
    executor: scheduler_pb2.Executor,
    transport: str,
    every_s: float,
    stop: asyncio.Event,
) -> None:
    """Registers an executor the scheduler reaches on its own (a RunPod endpoint) and keeps
    it fresh, as a heartbeat would; once no replica does, it lapses like any executor."""
    while not stop.is_set():
        try:
            await registry.register(executor, transport)
        except Exception as err:
            log.warning("registering %s failed: %s", executor.id, err)
        await wait_any([stop], every_s)
