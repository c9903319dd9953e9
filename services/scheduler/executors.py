"""The registry of executors that registered over gRPC and keep heartbeating."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import asyncpg

from comfyfleet.common.environments import ENGINES, NATIVE, name_problem, spec_violations
from comfyfleet.common.errors import FieldViolation, InvalidArgument
from comfyfleet.environments.v1 import environments_pb2
from comfyfleet.scheduler.v1 import scheduler_pb2
from services.scheduler.environments import Environments
from services.scheduler.journal import DISPATCH_KEY, Journal
from services.scheduler.notify import wait_any
from services.scheduler.records import ExecutorRecord

log = logging.getLogger(__name__)

PROVIDERS = ("local", "ecs", "runpod")

_UPSERT = """
INSERT INTO executors (id, address, provider, engine, node_types, slots, busy_slots, gpu_name,
    gpu_total_memory_bytes, gpu_free_memory_bytes, cached_models, transport, environment,
    registered_at, last_seen)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, now(), now())
ON CONFLICT (id) DO UPDATE SET address = $2, provider = $3, engine = $4, node_types = $5,
    slots = $6, busy_slots = $7, gpu_name = $8, gpu_total_memory_bytes = $9,
    gpu_free_memory_bytes = $10, cached_models = $11, transport = $12, environment = $13,
    registered_at = now(), last_seen = now()
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
    if executor.engine and executor.engine not in ENGINES:
        violations.append(FieldViolation("executor.engine", f"one of {', '.join(ENGINES)}"))
    if executor.capacity.slots < 0 or executor.capacity.busy_slots < 0:
        violations.append(FieldViolation("executor.capacity", "slot counts cannot be negative"))
    if violations:
        raise InvalidArgument("the executor registration is invalid", violations)


def environment_of_registration(
    executor: scheduler_pb2.Executor, declared: environments_pb2.Environment | None
) -> environments_pb2.Environment:
    """The environment an executor registers with, as it would declare it: named by
    ``executor.environment`` (or the declared environment's name). An executor that names
    none predates environments: it runs "native" when its engine is native."""
    engine = executor.engine or NATIVE
    env = environments_pb2.Environment()
    if declared is not None:
        env.CopyFrom(declared)
    name = executor.environment or env.name
    violations = []
    if not name and engine != NATIVE:
        violations.append(
            FieldViolation("executor.environment", f"required for the {engine} engine")
        )
    name = name or NATIVE
    problem = name_problem(name)
    if problem:
        violations.append(FieldViolation("executor.environment", problem))
    if env.name and env.name != name:
        violations.append(FieldViolation("environment.name", "must be executor.environment"))
    if env.engine and env.engine != engine:
        violations.append(FieldViolation("environment.engine", f"the executor runs {engine}"))
    env.name, env.engine = name, engine
    violations += spec_violations(env, "environment") if declared is not None else []
    if violations:
        raise InvalidArgument("the executor registration is invalid", violations)
    return env


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
    def __init__(self, pool: asyncpg.Pool, journal: Journal, environments: Environments) -> None:
        self.pool = pool
        self.journal = journal
        self.environments = environments

    async def register(
        self,
        executor: scheduler_pb2.Executor,
        transport: str = "grpc",
        *,
        environment: environments_pb2.Environment | None = None,
        object_info_json: str = "",
    ) -> None:
        """Adds or refreshes an executor and wakes the dispatchers: it has free slots.
        Executors that register over the API are reached over gRPC; the scheduler registers
        the RunPod endpoints it is configured with itself.

        Its environment is declared when nobody did (from ``environment``, the spec the
        executor was built with), and ``object_info_json``, its engine's catalog, becomes
        the environment's when it differs from the recorded one.
        """
        check_registration(executor)
        env = environment_of_registration(executor, environment)
        catalog = await self.environments.incoming_catalog(env.name, object_info_json)
        async with self.pool.acquire() as conn, conn.transaction():
            await self.environments.declare(conn, env, "executor.environment")
            if catalog is not None:
                await self.environments.record_catalog(conn, env.name, catalog)
            await conn.execute(
                _UPSERT,
                executor.id,
                executor.address,
                executor.provider or "local",
                env.engine,
                sorted(set(executor.node_types)),
                *_capacity(executor.capacity),
                transport,
                env.name,
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


async def keep_catalogued(
    registry: ExecutorRegistry,
    executor: scheduler_pb2.Executor,
    transport: str,
    describe: Callable[[], Awaitable[scheduler_pb2.RegisterExecutorRequest]],
    every_s: float,
    stop: asyncio.Event,
) -> None:
    """For an executor the scheduler registers itself (a RunPod endpoint, which cannot call
    the scheduler): while its environment's catalog is unknown, asks the executor to
    ``describe`` itself every ``every_s`` and records the catalog it reports."""
    while not stop.is_set():
        try:
            if await registry.environments.pending(executor.environment):
                await _learn_catalog(registry, executor, transport, describe)
        except Exception as err:
            log.warning("learning the catalog of %s failed: %s", executor.environment, err)
        await wait_any([stop], every_s)


async def _learn_catalog(
    registry: ExecutorRegistry,
    executor: scheduler_pb2.Executor,
    transport: str,
    describe: Callable[[], Awaitable[scheduler_pb2.RegisterExecutorRequest]],
) -> None:
    described = await describe()
    runs = described.executor.environment or described.environment.name
    if runs != executor.environment:
        log.error(
            "%s runs environment %r, but is configured as %r: its catalog is not recorded",
            executor.id,
            runs,
            executor.environment,
        )
        return
    await registry.register(
        executor,
        transport,
        environment=described.environment if described.HasField("environment") else None,
        object_info_json=described.object_info_json,
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
