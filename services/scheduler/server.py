"""Wiring: the scheduler's parts built from its config, served, and stopped in order."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from comfyfleet.common.db import open_pool
from comfyfleet.common.events import connect_bus
from comfyfleet.common.grpcserver import RunningServer, registration, serve
from comfyfleet.common.storage import ObjectStore
from comfyfleet.environments.v1 import environments_pb2_grpc
from comfyfleet.executions.v1 import executions_pb2_grpc
from comfyfleet.scheduler.v1 import scheduler_pb2_grpc
from services.scheduler.attempt import AttemptRunner
from services.scheduler.breaker import Breakers
from services.scheduler.budgets import Budgets
from services.scheduler.config import Config
from services.scheduler.dispatcher import Dispatcher
from services.scheduler.environments import Environments
from services.scheduler.executions import Executions
from services.scheduler.executors import ExecutorRegistry, keep_catalogued, keep_registered
from services.scheduler.journal import Journal
from services.scheduler.lifecycle import Backoff
from services.scheduler.models import ModelResolver
from services.scheduler.notify import Notifier
from services.scheduler.outbox import OutboxRelay
from services.scheduler.providers import runpod
from services.scheduler.providers.base import Provider, Providers
from services.scheduler.providers.ecs import EcsScaler
from services.scheduler.providers.local import LocalProvider
from services.scheduler.providers.runpod import RunpodProvider, RunpodScaler
from services.scheduler.queue import Queue
from services.scheduler.queue_metrics import QueueDepthReporter
from services.scheduler.reaper import Reaper
from services.scheduler.routing import Router
from services.scheduler.scaling import Autoscaler, Scaler
from services.scheduler.servicer import (
    EnvironmentServicer,
    ExecutionServicer,
    SchedulerServicer,
)
from services.scheduler.store import ExecutionStore
from services.scheduler.telemetry import BreakerTelemetry
from services.scheduler.uploads import Uploads
from services.scheduler.views import OutputLinks

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).parent / "migrations"


@dataclass
class Scheduler:
    """A running scheduler replica: its gRPC server and its background loops."""

    server: RunningServer
    store: ExecutionStore
    dispatcher: Dispatcher
    reaper: Reaper
    relay: OutboxRelay
    grace_s: float
    breakers: Breakers
    autoscaler: Autoscaler
    _stop_claiming: asyncio.Event = field(default_factory=asyncio.Event)
    _stop_loops: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _shutdown: asyncio.Task[None] | None = None

    @property
    def port(self) -> int:
        return self.server.port

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self.dispatcher.run(self._stop_claiming), name="dispatcher"),
            asyncio.create_task(self.reaper.run(self._stop_loops), name="reaper"),
            asyncio.create_task(self.relay.run(self._stop_loops), name="outbox relay"),
        ]

    def keep(self, name: str, loop: Callable[[asyncio.Event], Coroutine[Any, Any, None]]) -> None:
        """Runs another background loop until the scheduler stops."""
        self._tasks.append(asyncio.create_task(loop(self._stop_loops), name=name))

    async def shutdown(self) -> None:
        """Stop claiming; let calls and attempts in flight finish within the grace period
        (the rest are left to the lease reaper); publish what is in the outbox; stop."""
        if self._shutdown is None:
            self._shutdown = asyncio.create_task(self._stop())
        await asyncio.shield(self._shutdown)

    async def _stop(self) -> None:
        log.info("scheduler stopping: %d attempts in flight", self.dispatcher.in_flight)
        self._stop_claiming.set()
        await asyncio.gather(self.server.stop(self.grace_s), self.dispatcher.drain(self.grace_s))
        self._stop_loops.set()
        results = await asyncio.gather(*self._tasks, return_exceptions=True)
        for task, result in zip(self._tasks, results, strict=True):
            if isinstance(result, BaseException):
                log.error("%s ended with %r", task.get_name(), result)


def scalers_of(cfg: Config) -> list[Scaler]:
    """The providers whose size the scheduler decides: the ECS service, the RunPod endpoint."""
    scalers: list[Scaler] = []
    if cfg.ecs.enabled:
        scalers.append(EcsScaler(cfg.ecs))
    if cfg.runpod.enabled:
        scalers.append(RunpodScaler(cfg.runpod))
    return scalers


@asynccontextmanager
async def running_scheduler(cfg: Config) -> AsyncIterator[Scheduler]:
    """Connects to PostgreSQL (applying migrations), NATS and S3, serves on
    ``cfg.grpc_addr``, and runs the dispatcher, reaper and outbox relay until the block ends."""
    s = cfg.settings
    objects = ObjectStore.from_config(cfg.s3)
    await objects.ensure_bucket()
    notifier = Notifier(f"{cfg.schema}_changes")
    transports: dict[str, Provider] = {"grpc": LocalProvider(s.cancel_timeout_s)}
    if cfg.runpod.enabled:
        transports[runpod.TRANSPORT] = RunpodProvider(cfg.runpod)
    providers = Providers(transports)
    resolver = ModelResolver(cfg.models_addr)
    if not resolver.enabled:
        log.warning("COMFYFLEET_MODELS_ADDR is not set: workflows are queued without models")
    async with (
        open_pool(
            cfg.database.url,
            cfg.schema,
            MIGRATIONS,
            max_size=20,
            apply=cfg.database.migrate_on_start,
        ) as pool,
        connect_bus(cfg.nats, name=cfg.replica) as bus,
        notifier.listening(cfg.database.url),
        contextlib.aclosing(providers),
        contextlib.aclosing(resolver),
    ):
        telemetry = BreakerTelemetry(
            cfg.replica, publish=bus.nc.publish, subject=cfg.breaker_subject
        )
        breakers = Breakers(
            s.provider_breaker, s.executor_breaker, on_transition=telemetry.on_transition
        )
        telemetry.observe(breakers)
        router = Router(breakers, s.prices)
        journal = Journal(bus.subject, notifier.channel)
        backoff = Backoff(s.backoff_base_s, s.backoff_max_s)
        store = ExecutionStore(
            pool, journal, backoff, OutputLinks(objects, s.event_output_url_ttl_s), s.prices
        )
        budgets = Budgets(pool)
        queue = Queue(pool, journal, cfg.schema, router)
        environments = Environments(pool, s.executor_lapse_s)
        await environments.seed_native()
        registry = ExecutorRegistry(pool, journal, environments)
        runner = AttemptRunner(store, registry, providers, objects, s, router.run_times)
        dispatcher = Dispatcher(queue, runner, providers, notifier, s, breakers)
        uploads = Uploads(pool, objects, s)
        executions = Executions(
            store, objects, dispatcher, notifier, s, resolver, budgets, uploads, environments
        )
        servicers = [
            registration(
                ExecutionServicer(executions, OutputLinks(objects, s.output_url_ttl_s), uploads),
                executions_pb2_grpc,
                "ExecutionService",
            ),
            registration(
                SchedulerServicer(registry, queue, s, breakers, cfg.replica, budgets, pool),
                scheduler_pb2_grpc,
                "SchedulerService",
            ),
            registration(
                EnvironmentServicer(environments), environments_pb2_grpc, "EnvironmentService"
            ),
        ]
        autoscaler = Autoscaler(
            pool,
            queue,
            breakers,
            s.prices,
            scalers_of(cfg),
            cfg.scale_policies(),
            schema=cfg.schema,
            interval_s=s.autoscale_interval_s,
            executor_lapse_s=s.executor_lapse_s,
        )
        async with serve(cfg.grpc_addr, servicers, grace=s.shutdown_grace_s) as server:
            scheduler = Scheduler(
                server=server,
                store=store,
                dispatcher=dispatcher,
                reaper=Reaper(store, registry, dispatcher, s),
                relay=OutboxRelay(
                    pool,
                    bus,
                    notifier,
                    schema=cfg.schema,
                    poll_s=s.poll_interval_s,
                    retention_s=s.outbox_retention_s,
                ),
                grace_s=s.shutdown_grace_s,
                breakers=breakers,
                autoscaler=autoscaler,
            )
            scheduler.start()
            scheduler.keep("queue depth", QueueDepthReporter(pool, cfg.schema).run)
            if s.upload_sweep_interval_s > 0:
                scheduler.keep("upload sweep", uploads.run)
            if s.autoscale_interval_s > 0 and autoscaler.scalers:
                scheduler.keep("autoscaler", autoscaler.run)
            if cfg.runpod.enabled:
                endpoint = cfg.runpod.registration()
                scheduler.keep(
                    "runpod endpoint",
                    lambda stop: keep_registered(
                        registry, endpoint, runpod.TRANSPORT, s.heartbeat_interval_s, stop
                    ),
                )
                rp = transports[runpod.TRANSPORT]
                assert isinstance(rp, RunpodProvider)
                scheduler.keep(
                    "runpod catalog",
                    lambda stop: keep_catalogued(
                        registry,
                        endpoint,
                        runpod.TRANSPORT,
                        functools.partial(rp.describe, cfg.runpod.endpoint_url),
                        cfg.runpod.describe_interval_s,
                        stop,
                    ),
                )
            log.info("scheduler %s serving on port %d", cfg.replica, server.port)
            try:
                yield scheduler
            finally:
                await scheduler.shutdown()
                await telemetry.aclose()
